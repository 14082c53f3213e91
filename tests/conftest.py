import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "GLU_PRUNING_DATA" not in os.environ and (SHARED_DATA / "hf").is_dir():
    os.environ["GLU_PRUNING_DATA"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("GLU_PRUNING_DATA")
    if not d or not Path(d).is_dir(): pytest.skip("offline benchmark data not found (set GLU_PRUNING_DATA)")
    return Path(d)


@pytest.fixture(scope="session")
def smollm2():
    "The bundled SmolLM2-135M-Instruct (unpruned); tests that prune must prune a copy (`inplace=False`)."
    from glu_pruning.models import load_model
    return load_model("smollm2-135m-instruct", device="cpu")
