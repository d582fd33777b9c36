#!/bin/sh
# Replays the HTTP front-end's seed corpus through the fuzz target (TAP).
exec "${TOP_BUILDDIR:-.}/tests/fuzz/replay_http" "${TOP_SRCDIR:-.}/tests/fuzz/corpus/http"
