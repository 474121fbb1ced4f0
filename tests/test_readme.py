"""The README's promises stay true: CI runs exactly its test command; its launch command names app.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    readme = _commands((ROOT / "README.md").read_text())
    ci = _commands((ROOT / ".ci" / "run").read_text())
    test_command = [c for c in readme if "pytest" in c]
    assert len(test_command) == 1 and ci == test_command


def test_readme_launches_the_app_offline():
    launch = [c for c in _commands((ROOT / "README.md").read_text()) if "streamlit run app.py" in c]
    assert len(launch) == 1 and (ROOT / "app.py").is_file()
    assert "--server.fileWatcherType none" in launch[0]      # polling .venv's modules doubled the cold start


def test_bundled_data_is_credited():
    readme = (ROOT / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "MIT" in readme and "Krizhevsky" in readme
