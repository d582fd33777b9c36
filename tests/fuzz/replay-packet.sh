#!/bin/sh
# Replays the packet parser's seed corpus through the fuzz target (TAP).
exec "${TOP_BUILDDIR:-.}/tests/fuzz/replay_packet" "${TOP_SRCDIR:-.}/tests/fuzz/corpus/packet"
