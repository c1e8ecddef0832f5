"""Live transcription of answered calls (Vosk), its own process: docs/transcription.md."""
