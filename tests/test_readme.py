"""How the README's commands are read for `tests/deployments/test_stack.py`, which runs them."""

from __future__ import annotations

from tests.utils.readme import commands

DOC = """# Title

Inline: `curl http://x/health`, not `python -m x`, and `.venv/bin/prefect version`.

## Section

```bash
make run    # a comment
# a comment line
curl -X POST http://x -d '{
  "a": 1}'
curl http://x \\
  -H 'a: b'     # trailing
```

```python
print("not a command")
```
"""


def test_blocks_split_into_commands_across_quotes_and_continuations() -> None:
    found = commands(DOC)
    assert [(c.line, c.section) for c in found] == [
        (3, "Title"),
        (3, "Title"),
        (8, "Section"),
        (10, "Section"),
        (12, "Section"),
    ]
    assert found[0].text == "curl http://x/health"
    assert found[2].words == ["make", "run"]
    assert found[3].words[-1] == '{\n  "a": 1}'
    assert found[4].words == ["curl", "http://x", "-H", "a: b"]


def test_the_readme_has_commands_in_every_usage_section() -> None:
    from settings import PROJECT_DIR

    sections = {c.section for c in commands((PROJECT_DIR / "README.md").read_text())}
    assert {"The demo deployment", "Creating a schedule"} <= sections
