"""Session recording: asciicast v2 files and command reconstruction (see recorder.py)."""
