"""sluicegate: a fast, faithful LLM gateway for coding agents."""
