import pathlib

from keras_effattn.utils import metadata


def test_versions_device_and_git():
    info = metadata.run_metadata()
    assert info["versions"]["tensorflow"]
    assert info["versions"]["keras"].startswith("3.")
    assert info["device"]["kind"] in ("CPU", "GPU", "TPU")
    assert info["device"]["cpu_count"] >= 1
    git = info["git"]
    repo = pathlib.Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        assert len(git["commit"]) == 40
        assert isinstance(git["dirty"], bool)


def test_missing_package_is_none():
    assert metadata.package_versions(("no-such-package-xyz",)) == {"no-such-package-xyz": None}


def test_git_outside_checkout(tmp_path):
    assert metadata.git_commit(tmp_path) == {"commit": None, "dirty": None}
