"""Families whose processors need torchvision (Mistral 3, Llama 4, LFM2-VL in transformers 5.23): where it does
not import, loading one of their folders is refused with an error naming the package.  Their family tests
(tests/test_families.py, tests/test_family_cli.py) run wherever torchvision imports."""
from __future__ import annotations

import json

import pytest

from byorn.models import VLM, ModelError, zoo
from byorn.models.loading import has_torchvision


@pytest.mark.parametrize("fam,processor,image_processor", [
    ("mistral3", "PixtralProcessor", "PixtralImageProcessor"), ("llama4", "Llama4Processor", "Llama4ImageProcessor"),
    ("lfm2_vl", "Lfm2VlProcessor", "Lfm2VlImageProcessor")])
def test_a_processor_that_needs_torchvision_says_so(tmp_path, fam, processor, image_processor):
    """Without torchvision, a folder of these families is refused with an error naming the package."""
    if has_torchvision():
        pytest.skip("torchvision imports here: these folders load (tests/test_families.py proves them)")
    folder = tmp_path / fam
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": fam}))
    (folder / "model.safetensors").write_bytes(b"x")
    tok = zoo.make_tokenizer("bytelevel", ["<s>", "</s>", "<pad>"], bos="<s>", eos="</s>", pad="<pad>")
    tok.save_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": processor}))
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": image_processor}))
    with pytest.raises(ModelError, match=f"{processor} needs the package torchvision, which (is not installed|does "
                                         "not import)"):
        VLM.load(folder, device="cpu")
