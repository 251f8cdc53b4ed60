"""Plan: in memory, chunked, streamed, sharded or batched; one memory budget."""
