"""BibTeX for the benchmark, its metrics, and the models in a table."""

from __future__ import annotations

from . import __version__

MEMORYBENCH = """@software{{memorybench,
  title   = {{memorybench: Long-Context Memory Benchmarks for Action-Conditioned Video World Models}},
  author  = {{{{memorybench developers}}}},
  version = {{{version}}},
  year    = {{2026}},
  note    = {{Tasks, metrics and protocol as defined in memorybench {version}}}
}}"""

METRICS = r"""@article{wang2004ssim,
  title   = {Image Quality Assessment: From Error Visibility to Structural Similarity},
  author  = {Wang, Zhou and Bovik, Alan C. and Sheikh, Hamid R. and Simoncelli, Eero P.},
  journal = {IEEE Transactions on Image Processing},
  volume  = {13},
  number  = {4},
  pages   = {600--612},
  year    = {2004}
}
@inproceedings{zhang2018lpips,
  title     = {The Unreasonable Effectiveness of Deep Features as a Perceptual Metric},
  author    = {Zhang, Richard and Isola, Phillip and Efros, Alexei A. and Shechtman, Eli and Wang, Oliver},
  booktitle = {CVPR},
  year      = {2018}
}"""


def bibtex(citations: list[str], include_metrics: bool = True) -> str:
    """The benchmark's entry, the metrics' entries, then each distinct model citation once."""
    entries = [MEMORYBENCH.format(version=__version__)]
    if include_metrics:
        entries.append(METRICS)
    seen = set()
    for c in citations:
        c = (c or "").strip()
        if c and c not in seen:
            seen.add(c)
            entries.append(c)
    return "\n\n".join(entries) + "\n"
