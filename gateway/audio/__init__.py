"""Audio utilities: PCM/WAV, resampling, decoding uploads, sentence splitting."""
