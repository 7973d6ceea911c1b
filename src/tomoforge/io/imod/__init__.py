"""IMOD files: transforms (``.xf``), angles (``.tlt``, ``.xtilt``), ctfplotter ``.defocus``, binary models
(``.mod``, ``.fid``), etomo ``.edf`` and command files (``.com``).

Each module reads and writes IMOD's own numbers and converts them to tomoforge's models in separate, named
functions (CONVENTIONS.md §2, §5-8).
"""

from tomoforge.io.imod.com import ImodCommand, read_imod_com
from tomoforge.io.imod.defocus import (
    ImodDefocusEntry,
    ImodDefocusFile,
    ctf_to_imod_defocus,
    imod_defocus_to_ctf,
    read_imod_defocus,
    write_imod_defocus,
)
from tomoforge.io.imod.edf import EtomoDataset, etomo_dataset, parse_view_list, read_etomo_edf
from tomoforge.io.imod.model import (
    ImodContour,
    ImodModel,
    ImodObject,
    imod_model_to_landmarks,
    landmarks_to_imod_model,
    read_imod_model,
    write_imod_model,
)
from tomoforge.io.imod.tlt import read_tlt, read_tlt_columns, write_tlt
from tomoforge.io.imod.xf import (
    chain_relative_xf,
    compose_xf,
    read_xf,
    transforms_to_xf,
    write_xf,
    xf_to_transforms,
)

__all__ = [
    "EtomoDataset",
    "ImodCommand",
    "ImodContour",
    "ImodDefocusEntry",
    "ImodDefocusFile",
    "ImodModel",
    "ImodObject",
    "chain_relative_xf",
    "compose_xf",
    "ctf_to_imod_defocus",
    "etomo_dataset",
    "imod_defocus_to_ctf",
    "imod_model_to_landmarks",
    "landmarks_to_imod_model",
    "parse_view_list",
    "read_etomo_edf",
    "read_imod_com",
    "read_imod_defocus",
    "read_imod_model",
    "read_tlt",
    "read_tlt_columns",
    "read_xf",
    "transforms_to_xf",
    "write_imod_defocus",
    "write_imod_model",
    "write_tlt",
    "write_xf",
    "xf_to_transforms",
]
