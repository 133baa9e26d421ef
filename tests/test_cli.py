import pytest

from coursekit import cli


def test_parse_param_reads_literals_like_papermill():
    assert cli.parse_param("seed=3") == ("seed", 3)
    assert cli.parse_param("temperature=2.5") == ("temperature", 2.5)
    assert cli.parse_param("profile=smoke") == ("profile", "smoke")
    assert cli.parse_param("data_dir=None") == ("data_dir", None)
    assert cli.parse_param("classes=['cat', 'dog']") == ("classes", ["cat", "dog"])
    for bad in ("seed", "=3", "2x=1"):
        with pytest.raises(ValueError, match="malformed parameter"):
            cli.parse_param(bad)


def test_unknown_notebook_and_parameter_are_refused_before_running(capsys):
    assert cli.main(["run", "--only", "99_nothing"]) == 2
    assert "unknown notebook '99_nothing'" in capsys.readouterr().err
    assert cli.main(["run", "--only", "00", "-p", "not_a_param=1"]) == 2
    assert "has no parameter(s) ['not_a_param']" in capsys.readouterr().err


def test_report_on_empty_run_dir(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "no ledger records" in capsys.readouterr().err


def test_notebooks_are_listed_in_course_order():
    names = [p.stem for p in cli.list_notebooks()]
    assert names == sorted(names) and names[0] == "00_baseline"
