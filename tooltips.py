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
    "bpm": "Tempo in beats per minute (30-300). Empty lets the model choose.",
    "keyscale": "Musical key, e.g. 'A minor'. Empty lets the model choose.",
    "timesignature": "Beats per bar (2, 3, 4 or 6). Empty lets the model choose.",
    "settings_text": "A run's settings.json. Paste or upload one, then Apply settings to load it into the form.",
}
