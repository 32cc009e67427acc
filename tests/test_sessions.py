"""New sessions build block configs lazily (app/sessions.py) and still hold every one when asked."""
import gradio as gr
import pytest
from gradio import state_holder

from app import sessions


@pytest.fixture()
def demo():
    with gr.Blocks() as demo:
        box = gr.Textbox("a", label="one")
        out = gr.Textbox(label="two")
        num = gr.Number(3)
        state = gr.State({"k": 1})
        box.submit(lambda a, s: (a.upper(), s), [box, state], [out, state])
    return demo, box, out, num, state


def test_a_new_session_builds_no_block_config_until_one_is_read(demo, monkeypatch):
    blocks, box, out, num, state = demo
    if not sessions.install():
        pytest.skip(f"lazy session configs are written for gradio {sessions.GRADIO_VERSION}")
    assert state_holder.SessionState is sessions.LazySessionState
    built = []
    real = blocks.default_config.config_for_block
    monkeypatch.setattr(type(blocks.default_config), "config_for_block",
                        staticmethod(lambda *a, **k: built.append(a[0]) or real(*a, **k)))
    session = state_holder.SessionState(blocks)
    assert built == []                                   # nothing built for a visitor who has done nothing
    session._update_value_in_config(out._id, "HELLO")    # an event's output: that block alone
    assert built == [out._id]
    assert session.config_values[out._id]["props"]["value"] == "HELLO"
    configs = list(session.components)                    # a deep link: every block, as Gradio's eager table
    eager = {k: real(k, [], b) for k, b in blocks.default_config.blocks.items() if k in blocks.blocks}
    assert len(configs) == len(eager) and {c["id"] for c in configs} == set(eager)
    assert next(c for c in configs if c["id"] == num._id)["props"]["value"] == 3
    assert session[state._id] == {"k": 1} and session[state._id] is not state.value  # states: a copy each


def test_install_leaves_another_gradio_alone(monkeypatch):
    monkeypatch.setattr(state_holder, "SessionState", sessions.LazySessionState.__mro__[1])
    monkeypatch.setattr(gr, "__version__", "0.0.1")
    assert sessions.install() is False
    assert state_holder.SessionState is sessions.LazySessionState.__mro__[1]


def test_the_page_is_rendered_once_per_address_and_served_whole(tmp_path):
    """PageCache over a counting ASGI app: one render per address, the same bytes to every visitor;
    other paths, other queries, login cookies and answers with cookies pass through."""
    import asyncio

    renders = []

    async def app(scope, receive, send):
        renders.append((scope["path"], scope.get("query_string", b"")))
        headers = [(b"content-type", b"text/html")]
        if scope.get("query_string") == b"cookie=1":
            headers.append((b"set-cookie", b"a=b"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<html>" + scope["path"].encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"</html>", "more_body": False})

    cache = sessions.PageCache(app)

    async def get(path="/", query=b"", headers=((b"host", b"a.example"),)):
        sent = []

        async def send(m):
            sent.append(m)
        await cache({"type": "http", "method": "GET", "path": path, "query_string": query, "headers": list(headers),
                     "scheme": "http", "root_path": ""}, None, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    async def main():
        first = await asyncio.gather(*[get() for _ in range(20)])      # a class at once
        assert set(first) == {(200, b"<html>/</html>")} and len(renders) == 1
        assert await get(query=b"lesson=3") == (200, b"<html>/</html>") and len(renders) == 1
        await get(headers=((b"host", b"b.example"),))                   # another address: its own page
        assert len(renders) == 2
        for query, headers in ((b"page=x", ()), (b"cookie=1", ()), (b"", ((b"cookie", b"access-token-1=x"),))):
            await get(query=query, headers=headers)
            await get(query=query, headers=headers)
        assert len(renders) == 2 + 6                                    # never cached
        await get("/config")
        await get("/config")
        assert len(renders) == 10

    asyncio.run(main())
