"""Damaged GGUF files are named before any conversion: cut short anywhere, or dequantizing to non-finite
values (files written here with the gguf package's own writer)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from calmix.models.gguf import GgufFileError, check_finite, check_gguf_file


@pytest.fixture
def gguf_file(tmp_path) -> Path:
    import gguf

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("a", np.arange(64, dtype=np.float32).reshape(8, 8))
    writer.add_tensor("b", np.ones((4, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_intact_file_passes(gguf_file):
    check_gguf_file(gguf_file)


@pytest.mark.parametrize("keep", [10, 40, 100, 200, 500, 671])  # inside the header, the tensor table, the tensors
def test_a_file_cut_short_anywhere_is_named(gguf_file, keep):
    gguf_file.write_bytes(gguf_file.read_bytes()[:keep])
    with pytest.raises(GgufFileError, match=rf"^{gguf_file} (\({keep} bytes\) is not a readable GGUF file|is truncated)"):
        check_gguf_file(gguf_file)


def test_a_file_that_is_no_gguf_is_named(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not found</html>" * 10)
    with pytest.raises(GgufFileError, match=rf"^{path} \(220 bytes\) is not a readable GGUF file"):
        check_gguf_file(path)


def test_non_finite_dequantized_values_are_named():
    check_finite({"w": torch.ones(3)}, "m.gguf")
    with pytest.raises(GgufFileError, match=r"^m.gguf: tensor 'model.layers.0.w' dequantizes to non-finite values"):
        check_finite({"ok": torch.ones(2), "model.layers.0.w": torch.tensor([1.0, float("inf")])}, "m.gguf")
