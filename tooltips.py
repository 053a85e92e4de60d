"""Help text for every control, keyed by the control's (pipeline) name."""

TOOLTIPS: dict[str, str] = {
    "prompt": "The style of the song: genre, instruments, mood, voice, tempo feel. "
    "Comma-separated tags or a sentence both work.",
    "lyrics": "Lyrics with section tags on their own lines, e.g. [verse], [chorus], [bridge]. "
    "Leave empty for the model to hum or for an instrumental.",
    "instrumental": "No vocals: the lyrics are replaced by ACE-Step's instrumental marker.",
    "audio_duration": "Length of the song in seconds (10 s to 10 min).",
    "vocal_language": "The language the lyrics are sung in.",
    "num_inference_steps": "Denoising steps. Turbo checkpoints are tuned for 8; SFT and base for about 50.",
    "guidance_scale": "How strongly the song follows the prompt (APG guidance). "
    "Turbo checkpoints ignore it: they were distilled without guidance.",
    "shift": "Timestep shift: higher values spend more steps on coarse structure (1-5).",
    "cfg_interval_start": "Guidance is applied from this point of the schedule (0 = first step).",
    "cfg_interval_end": "Guidance is applied up to this point of the schedule (1 = last step).",
    "seed": "The same seed and settings give the same song. -1 picks a new random seed each run.",
    "batch_size": "How many takes to make at once; take n uses seed + n - 1.",
    "bpm": "Tempo in beats per minute (30-300). 0 or empty lets the model choose.",
    "keyscale": "Musical key, e.g. 'A minor'. Empty lets the model choose.",
    "timesignature": "Beats per bar (2, 3, 4 or 6). Empty lets the model choose.",
    "src_audio": "The song to work from: WAV, FLAC, OGG or MP3, up to 10 minutes.",
    "reference_audio": "A clip whose voice and instrument timbre the cover should borrow (optional).",
    "audio_cover_strength": "1 follows the source's structure closely; lower values let the new style "
    "and lyrics take over.",
    "extend_seconds": "How much new music to add (5-240 s). The whole song is capped at 10 minutes.",
    "extend_where": "Continue after the song's end, or write an intro before its start.",
    "repainting_start": "Start of the segment to re-make, in seconds.",
    "repainting_end": "End of the segment to re-make, in seconds. Everything outside it stays as it was.",
    "task_type": "Re-make the segment (any checkpoint), or with a base checkpoint: extract one "
    "instrument's track, add a new track over the segment, or complete a lone track with others.",
    "track_name": "The instrument track to extract or add.",
    "complete_track_classes": "The tracks to add when completing a lone track.",
    "master": "Bring each take to a set loudness (default -14 LUFS, the streaming level) with a "
    "true-peak limiter so it never clips. Note that for Extend and Edit it changes the untouched audio too.",
    "target_lufs": "Integrated loudness the mastering aims for: -14 streaming, -16 Apple Music, "
    "-23 broadcast (EBU R128), -9 loud club masters.",
    "true_peak_dbtp": "The highest peak allowed between samples after mastering; -1 dBTP leaves room "
    "for MP3 and AAC encoders.",
    "fade_in_s": "Fade the start in over this many seconds (0 = off).",
    "fade_out_s": "Fade the end out over this many seconds (0 = off).",
    "trim_silence": "Cut silence (below -60 dBFS) from the start and end, keeping 50 ms.",
    "wav_bit_depth": "WAV sample format: 16-bit for CDs and small files, 24-bit for mixing, "
    "32-bit float to keep every detail for further processing.",
    "mp3_bitrate_kbps": "MP3 bitrate (constant). 320 kbps is the highest MP3 quality.",
    "opus": "Also write an Ogg Opus file: small, high quality, good for sharing.",
    "cover_image": "Optional cover art, embedded in every WAV, FLAC, MP3 and Opus file (at most 5 MB).",
    "share_link": "Press Share link for a link that opens the studio with these settings (never the audio).",
    "settings_text": "A run's settings.json. Paste or upload one, then Apply settings to load it into the form.",
}
