"""Lyrics you can trust: a take's vocal stem transcribed with word timings, aligned to the
lyrics the user wrote line by line, written out as LRC and checked (sung, partly sung, missing).

``align`` (pure: lines, alignment, scores), ``lrc`` (LRC text, tags), ``recognise`` (the
speech models behind one small interface), ``check`` (a saved take in, the check saved in its run).
"""
