import pytest
from train_helpers import make_image_folder


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "data")
