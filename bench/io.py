"""Read throughput of ``codixr.io.read_xray`` (images/s) on real sample files and generated full-size ones.

    .venv/bin/python -m bench.io [--size 256] [--seconds 2]

Real files: the xrv-samples in ../shared/data and pydicom-data's CR chest radiograph, when present.
Generated: a MIMIC-CXR-sized 16-bit DICOM (3050 x 2539) and a 16-bit PNG of the same size, written to a
temporary folder with CoDiXR's own writers. Single process, single image at a time.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file

from codixr.io import read_xray, write_png, write_secondary_capture

logger = logging.getLogger("bench.io")

SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "xrv-samples"
SIIM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def real_cases() -> list[tuple[str, str, Path]]:
    """(label, kind, path) of the real files present on this machine."""
    cases = [
        ("SIIM CR, JPEG baseline 8-bit 1024x1024, 0.168 mm", "DICOM", SHARED_SAMPLES / SIIM),
        ("NIH ChestX-ray14 PNG 8-bit 512x512", "PNG", SHARED_SAMPLES / "00000001_000.png"),
        ("PadChest JPEG 1036x885", "JPEG", SHARED_SAMPLES / "16747_3_1.jpg"),
    ]
    for name, label in (("RG1_UNCR.dcm", "uncompressed"), ("RG1_J2KR.dcm", "JPEG 2000 lossless")):
        path = get_testdata_file(name, download=False)
        if path:
            cases.append((f"pydicom-data CR chest 15-bit 1955x1841, {label}", "DICOM", Path(path)))
    return [case for case in cases if case[2].is_file()]


def generated_cases(folder: Path) -> list[tuple[str, str, Path]]:
    """A MIMIC-CXR-sized radiograph-like image written as 16-bit DICOM and 16-bit PNG."""
    rng = np.random.default_rng(0)
    rows, cols = 3050, 2539
    y, x = np.mgrid[0:rows, 0:cols]
    image = 0.5 + 0.3 * np.sin(x / 300.0) * np.cos(y / 400.0) + 0.02 * rng.standard_normal((rows, cols))
    image = np.clip(image, 0, 1)
    dicom = write_secondary_capture(image, folder / "generated.dcm", description="benchmark", bits=16)
    png = write_png(image, folder / "generated.png", bits=16)
    return [
        (f"generated DICOM 16-bit {rows}x{cols}, uncompressed", "DICOM", dicom),
        (f"generated PNG 16-bit {rows}x{cols}", "PNG", png),
    ]


def throughput(path: Path, size: int, seconds: float) -> tuple[float, int]:
    """Images per second reading ``path`` repeatedly for about ``seconds`` (after one warm-up read)."""
    read_xray(path, size=size)
    count, start = 0, time.perf_counter()
    while True:
        read_xray(path, size=size)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and count >= 3:
            return count / elapsed, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="output side (default 256, as the paper)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as folder:
        cases = real_cases() + generated_cases(Path(folder))
        logger.info("read_xray throughput, size=%d, %s, %s, %d CPU(s)", args.size, platform.python_version(),
                    platform.processor() or platform.machine(), os.cpu_count())
        logger.info("%-6s %10s %9s  %s", "kind", "images/s", "ms/image", "file")
        totals: dict[str, list[float]] = {}
        for label, kind, path in cases:
            rate, _ = throughput(path, args.size, args.seconds)
            totals.setdefault(kind, []).append(rate)
            logger.info("%-6s %10.1f %9.1f  %s", kind, rate, 1000 / rate, label)
    for kind, rates in totals.items():
        logger.info("%-6s median %.1f images/s over %d file(s)", kind, float(np.median(rates)), len(rates))


if __name__ == "__main__":
    main()
