// The Overview's histogram and sample map: plotly.js inside a gr.HTML component (app/plotly_html.py).
// The page loads this file (the component's `head`); each component's `js_on_load` calls
// byornPlot(element, trigger, props, watch) with the names Gradio gives it.
window.byornPlot = function (element, trigger, props, watch) {
  const root = element;
  const plot = () => root.querySelector('.byorn-plot');
  const state = {mode: 'lasso', rows: null, fig: null};

  const decode = (b64, Type) => {
    const bin = atob(b64); const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  };

  const mapFigure = (p) => {
    const trace = {type: 'scattergl', mode: 'markers', x: state.x, y: state.y,
      marker: {size: p.size, color: state.c, colorscale: p.colorscale, cmin: p.cmin, cmax: p.cmax,
               colorbar: Object.assign({thickness: 12, len: 0.9}, p.colorbar || {}), line: {width: 0}},
    };
    if (p.text) { trace.hovertext = p.text; trace.hoverinfo = 'text'; }
    else { trace.hoverinfo = 'none'; }
    state.home = [-800, p.xy_max + 800];
    const axis = {showticklabels: false, zeroline: false, showgrid: false, range: state.home.slice()};
    const layout = {height: root.querySelector('.byorn-plot').clientHeight || 560,
      margin: {l: 10, r: 10, t: 30, b: 10}, dragmode: state.mode === 'zoom' ? 'zoom' : false,
      hovermode: p.text ? 'closest' : false, uirevision: p.uirevision, paper_bgcolor: 'white', plot_bgcolor: 'white',
      title: {text: p.title, font: {size: 13}, x: 0.01}, xaxis: Object.assign({}, axis),
      yaxis: Object.assign({}, axis, {scaleanchor: undefined})};
    return {data: [trace], layout: layout};
  };

  const paintSelection = () => {  // selected points drawn on a canvas over the map (a restyle of 100k
    const el = plot(), cv = root.querySelector('.byorn-sel');  // WebGL points takes ~1 s; this, milliseconds)
    if (!el || !cv) return;
    const w = el.clientWidth, h = el.clientHeight, dpr = window.devicePixelRatio || 1;
    cv.style.left = el.offsetLeft + 'px'; cv.style.top = el.offsetTop + 'px';
    cv.style.width = w + 'px'; cv.style.height = h + 'px';
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
    const g = cv.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0); g.clearRect(0, 0, w, h);
    if (!state.isMap || !state.rows || !state.rows.length || !el._fullLayout || !el._fullLayout.xaxis) return;
    const fl = el._fullLayout, s = fl._size, xa = fl.xaxis, ya = fl.yaxis;
    g.save(); g.beginPath(); g.rect(s.l, s.t, s.w, s.h); g.clip();
    g.fillStyle = 'rgba(255, 255, 255, 0.6)'; g.fillRect(s.l, s.t, s.w, s.h);  // dim the rest
    const r = Math.max(1.5, (state.size || 4) * 0.6);
    g.fillStyle = '#111827'; g.beginPath();
    for (const i of state.rows) {
      const px = s.l + xa.l2p(state.x[i]), py = s.t + ya.l2p(state.y[i]);
      g.moveTo(px + r, py); g.arc(px, py, r, 0, 6.2832);
    }
    g.fill(); g.restore();
  };

  const draw = () => {
    const el = plot();
    if (!el || !props.value) return;
    if (typeof Plotly === 'undefined') { setTimeout(draw, 50); return; }  // script still loading
    let p;
    try { p = JSON.parse(props.value); } catch (e) { console.error('bad figure JSON', e); return; }
    let fig;
    state.isMap = p.kind === 'map';
    if (state.isMap) {
      root.querySelector('.byorn-toolbar').style.display = '';
      if (!p.n) { fig = {data: [], layout: {height: el.clientHeight || 560, annotations: [{text: p.note || 'no map',
                   showarrow: false, xref: 'paper', yref: 'paper', x: 0.5, y: 0.5}],
                   xaxis: {visible: false}, yaxis: {visible: false}}}; state.n = 0; }
      else {
        state.n = p.n; state.x = decode(p.x, Uint16Array); state.y = decode(p.y, Uint16Array);
        state.c = decode(p.c, Uint8Array);
        if (state.rows && state.rows.length && state.rows[state.rows.length - 1] >= p.n) state.rows = null;
        state.size = p.size;
        fig = mapFigure(p);
      }
    } else { fig = p; }
    const t0 = performance.now();
    el.dataset.valueAt = String(Math.round(t0));  // when the figure arrived (for benchmarks/app_bench.py)
    Plotly.react(el, fig.data, fig.layout, {responsive: true, displaylogo: false, displayModeBar: false,
                                             scrollZoom: false, doubleClick: false}).then(() => {
      el.dataset.drawnMs = String(Math.round(performance.now() - t0));
      el.dataset.drawnAt = String(Math.round(performance.now()));
      el.dataset.points = String(state.n || 0);
      paintSelection();
    });
    if (!el.dataset.bound) { el.dataset.bound = '1'; bind(el); }
  };

  // -- clicks and selections -------------------------------------------------------------
  const area = (el) => {  // plot area in client pixels, and pixel <-> data transforms
    const fl = el._fullLayout, r = el.getBoundingClientRect();
    const left = r.left + fl._size.l, top = r.top + fl._size.t;
    return {left, top, w: fl._size.w, h: fl._size.h,
            toData: (cx, cy) => [fl.xaxis.p2l(cx - left), fl.yaxis.p2l(cy - top)],
            toPx: (x, y) => [left + fl.xaxis.l2p(x), top + fl.yaxis.l2p(y)]};
  };

  const nearest = (el, cx, cy, maxPx) => {
    const a = area(el); let best = -1, bestD = maxPx * maxPx;
    const fl = el._fullLayout, xa = fl.xaxis, ya = fl.yaxis;
    for (let i = 0; i < state.n; i++) {
      const dx = a.left + xa.l2p(state.x[i]) - cx, dy = a.top + ya.l2p(state.y[i]) - cy, d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  };

  const inPolygon = (poly) => {  // poly in data coordinates; even-odd rule; returns row indices
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const [px, py] of poly) { x0 = Math.min(x0, px); x1 = Math.max(x1, px); y0 = Math.min(y0, py); y1 = Math.max(y1, py); }
    const out = []; const m = poly.length;
    for (let i = 0; i < state.n; i++) {
      const x = state.x[i], y = state.y[i];
      if (x < x0 || x > x1 || y < y0 || y > y1) continue;
      let inside = false;
      for (let a = 0, b = m - 1; a < m; b = a++) {
        const ya = poly[a][1], yb = poly[b][1];
        if ((ya > y) !== (yb > y) && x < (poly[b][0] - poly[a][0]) * (y - ya) / (yb - ya) + poly[a][0]) inside = !inside;
      }
      if (inside) out.push(i);
    }
    return out;
  };

  const maskOf = (rows) => {
    const bytes = new Uint8Array(Math.ceil(state.n / 8));
    for (const i of rows) bytes[i >> 3] |= (1 << (i & 7));
    let s = ''; for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return btoa(s);
  };

  const select = (rows, how) => {
    const t1 = performance.now();
    state.rows = rows && rows.length ? Uint32Array.from(rows) : null;
    paintSelection();
    const el = plot();
    el.dataset.selected = String(rows ? rows.length : 0);
    el.dataset.highlightMs = String(Math.round(performance.now() - t1));
    trigger('points_selected', {mask: rows && rows.length ? maskOf(rows) : '', count: rows ? rows.length : 0,
                                how: how, t_ms: Math.round(performance.now() - (state.t0 || performance.now()))});
  };

  const bind = (el) => {
    el.byornPixelOf = (i) => { const a = area(el); return a.toPx(state.x[i], state.y[i]); };  // for tests
    el.byornSelect = (rows) => { state.rows = rows && rows.length ? Uint32Array.from(rows) : null; paintSelection(); };
    el.on('plotly_relayout', paintSelection);    // pan, zoom, reset: the points moved
    el.on('plotly_relayouting', paintSelection);
    el.on('plotly_click', (ev) => {  // pan / zoom modes: plotly's own clicks
      if (!ev || !ev.points || !ev.points.length) return;
      const p = ev.points[0];
      if (state.isMap) trigger('point_click', {row: p.pointIndex});
      else if (p.customdata !== undefined && p.customdata !== null) trigger('point_click', {sample_id: String(p.customdata)});
    });
    const svg = root.querySelector('.byorn-lasso');
    const path = svg.querySelector('path');
    const inside = (a, ev) => ev.clientX >= a.left && ev.clientX <= a.left + a.w && ev.clientY >= a.top && ev.clientY <= a.top + a.h;
    el.addEventListener('mousedown', (ev) => {
      if (!state.isMap || !state.n || ev.button !== 0) return;
      const a = area(el);
      if (!inside(a, ev)) return;
      if (state.mode === 'pan') { ev.stopPropagation(); ev.preventDefault(); panDrag(el, ev); return; }
      if (!(state.mode === 'lasso' || state.mode === 'box')) return;
      ev.stopPropagation(); ev.preventDefault();  // our drag, not plotly's
      state.t0 = performance.now();
      const box = root.getBoundingClientRect(), start = [ev.clientX, ev.clientY], pts = [start];
      const local = ([cx, cy]) => `${cx - box.left},${cy - box.top}`;
      svg.style.display = 'block';
      let far = 0;  // how far the drag went from its start (a lasso may end where it began)
      const move = (e) => {
        far = Math.max(far, Math.hypot(e.clientX - start[0], e.clientY - start[1]));
        const last = pts[pts.length - 1];
        if (state.mode === 'box') { pts.length = 1; pts.push([e.clientX, e.clientY]);
          const [x0, y0] = start, [x1, y1] = [e.clientX, e.clientY];
          path.setAttribute('d', `M${local([x0, y0])}L${local([x1, y0])}L${local([x1, y1])}L${local([x0, y1])}Z`); }
        else if (Math.hypot(e.clientX - last[0], e.clientY - last[1]) >= 3) {
          pts.push([e.clientX, e.clientY]); path.setAttribute('d', 'M' + pts.map(local).join('L') + 'Z'); }
      };
      const up = (e) => {
        window.removeEventListener('mousemove', move, true); window.removeEventListener('mouseup', up, true);
        svg.style.display = 'none'; path.setAttribute('d', '');
        if (far < 4) {  // a click: the nearest point within 8 px opens
          const row = nearest(el, e.clientX, e.clientY, 8);
          if (row >= 0) trigger('point_click', {row: row});
          return;
        }
        if (state.mode === 'box') pts.push([e.clientX, e.clientY]);
        let poly = pts.map(([cx, cy]) => a.toData(cx, cy));
        if (state.mode === 'box') { const [p0, p1] = [poly[0], poly[poly.length - 1]];
          poly = [[p0[0], p0[1]], [p1[0], p0[1]], [p1[0], p1[1]], [p0[0], p1[1]]]; }
        const t = performance.now(), rows = inPolygon(poly);
        el.dataset.testMs = String(Math.round(performance.now() - t));
        el.dataset.releaseAt = String(t);
        select(rows, state.mode);
      };
      window.addEventListener('mousemove', move, true); window.addEventListener('mouseup', up, true);
    }, true);
    root.querySelectorAll('.byorn-toolbar button').forEach(b => b.addEventListener('click', () => {
      const what = b.dataset.mode;
      if (what === 'clear') { select(null, 'clear'); return; }
      if (what === 'reset') { commit(el, {'xaxis.range': state.home.slice(), 'yaxis.range': state.home.slice()}); return; }
      state.mode = what;
      root.querySelectorAll('.byorn-toolbar button[data-mode]').forEach(o => o.classList.toggle('on', o.dataset.mode === what));
      Plotly.relayout(el, {dragmode: what === 'zoom' ? 'zoom' : false});
    }));
    el.addEventListener('wheel', (ev) => {  // zoom around the cursor: previewed, drawn once it stops
      if (!state.isMap || !state.n) return;
      const a = area(el);
      if (!inside(a, ev)) return;
      ev.preventDefault();
      const w = state.wheel || (state.wheel = {k: 1, px: ev.clientX - a.left, py: ev.clientY - a.top});
      w.k = Math.min(50, Math.max(0.02, w.k * Math.exp(-ev.deltaY * 0.0015)));
      const fl = el._fullLayout;
      preview(el, `translate(${fl._size.l + w.px}px, ${fl._size.t + w.py}px) scale(${w.k}) translate(${-(fl._size.l + w.px)}px, ${-(fl._size.t + w.py)}px)`);
      clearTimeout(state.wheelTimer);
      state.wheelTimer = setTimeout(() => {
        const xa = fl.xaxis, ya = fl.yaxis, cx = xa.p2l(w.px), cy = ya.p2l(w.py);
        const [x0, x1] = xa.range, [y0, y1] = ya.range;
        state.wheel = null;
        commit(el, {'xaxis.range': [cx - (cx - x0) / w.k, cx + (x1 - cx) / w.k],
                    'yaxis.range': [cy - (cy - y0) / w.k, cy + (y1 - cy) / w.k]});
      }, 250);
    }, {passive: false});
  };

  // Pan and wheel zoom move the drawn layers with a CSS transform while the gesture lasts (a WebGL
  // redraw of 100k points takes ~1 s on a CPU-rendered browser), then redraw once at the new ranges.
  const layers = (el) => [...el.querySelectorAll('canvas'), root.querySelector('.byorn-sel')].filter(Boolean);
  const preview = (el, transform) => layers(el).forEach(c => { c.style.transformOrigin = '0 0'; c.style.transform = transform; });
  const commit = (el, ranges) => {
    const t = performance.now();
    return Plotly.relayout(el, ranges).then(() => {
      layers(el).forEach(c => { c.style.transform = ''; });
      paintSelection();
      el.dataset.redrawMs = String(Math.round(performance.now() - t));
    });
  };
  const panDrag = (el, ev) => {
    const start = [ev.clientX, ev.clientY];
    let dx = 0, dy = 0;
    const move = (e) => { dx = e.clientX - start[0]; dy = e.clientY - start[1]; preview(el, `translate(${dx}px, ${dy}px)`); };
    const up = () => {
      window.removeEventListener('mousemove', move, true); window.removeEventListener('mouseup', up, true);
      if (Math.hypot(dx, dy) < 4) { preview(el, ''); const row = nearest(el, start[0], start[1], 8);
        if (row >= 0) trigger('point_click', {row: row}); return; }
      const fl = el._fullLayout, xa = fl.xaxis, ya = fl.yaxis, s = fl._size;
      commit(el, {'xaxis.range': [xa.p2l(-dx), xa.p2l(s.w - dx)], 'yaxis.range': [ya.p2l(s.h - dy), ya.p2l(-dy)]});
    };
    window.addEventListener('mousemove', move, true); window.addEventListener('mouseup', up, true);
  };

  draw();
  watch('value', draw);
};
