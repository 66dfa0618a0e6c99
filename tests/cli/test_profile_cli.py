"""``physode profile``: its arguments are checked before any work (issue 16)."""

from __future__ import annotations

from physode.cli.main import main


def test_profile_refuses_bad_confidence_before_work(tmp_path, capsys):
    out = tmp_path / "fit.nc"
    status = main(["profile", "pendulum", str(tmp_path / "missing.h5"), "--out", str(out),
                   "--confidence", "1.5"])
    assert status == 2
    assert "--confidence" in capsys.readouterr().err
    assert not out.exists()


def test_profile_refuses_missing_data(tmp_path, capsys):
    status = main(["profile", "pendulum", str(tmp_path / "missing.h5"), "--out",
                   str(tmp_path / "fit.nc")])
    assert status == 2
    assert "missing.h5" in capsys.readouterr().err


def test_profile_is_registered(capsys):
    try:
        main(["profile", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    text = capsys.readouterr().out
    assert "--names" in text and "--sample" in text and "--confidence" in text
