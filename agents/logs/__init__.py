"""Import of Claude Code session logs (`~/.claude/projects/*/*.jsonl`)."""
