"""bf16 autocast on a CPU without native bf16 is emulated (~100x slower here): stages train in float32 there."""

import logging

from training.common import cpu_has_native_bf16, resolve_mixed_precision

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_cpu_flags_are_read():
    assert cpu_has_native_bf16(AVX2) is False
    assert cpu_has_native_bf16(SAPPHIRE) is True
    assert cpu_has_native_bf16("no flags here") is None


def test_bf16_falls_back_to_float32_only_where_it_is_emulated(caplog):
    with caplog.at_level(logging.WARNING, logger="training"):
        assert resolve_mixed_precision("bf16", "stage2_vae", cuda=False, native_bf16=False) == "no"
    assert "no native bf16" in caplog.text
    assert resolve_mixed_precision("bf16", "stage2_vae", cuda=False, native_bf16=True) == "bf16"
    assert resolve_mixed_precision("bf16", "stage2_vae", cuda=True, native_bf16=False) == "bf16"
    assert resolve_mixed_precision("no", "stage2_vae", cuda=False, native_bf16=False) == "no"
    assert resolve_mixed_precision("fp16", "stage2_vae", cuda=True) == "fp16"
