"""Help text for every control, keyed by the control's (pipeline) name."""

TOOLTIPS: dict[str, str] = {
    "prompt": "The style of the song: genre, instruments, mood, voice, tempo feel. "
    "Comma-separated tags or a sentence both work.",
    "lyrics": "Lyrics with section tags on their own lines, e.g. [verse], [chorus], [bridge]. "
    "Leave empty for the model to hum or for an instrumental.",
    "instrumental": "No vocals: the lyrics are replaced by ACE-Step's instrumental marker.",
    "audio_duration": "Length of the song in seconds (10 s to 10 min). With Think on, leave it empty and the "
    "planner chooses the length, ending each take where its song ends (shown and saved with the run). "
    "Without Think a length is needed.",
    "vocal_language": "The language the lyrics are sung in. With Think on, Other / unknown lets the planner "
    "tell it from the lyrics (its choice is shown and saved); pick one to keep it.",
    "num_inference_steps": "Denoising steps. Turbo runs its official 8-step schedule; another count is "
    "mapped onto the timesteps turbo was trained on (the run's summary says so). SFT and base: about 50.",
    "guidance_scale": "How strongly the song follows the prompt (APG guidance). "
    "Turbo checkpoints ignore it: they were distilled without guidance.",
    "shift": "Timestep shift: higher values spend more steps on coarse structure (1-5).",
    "cfg_interval_start": "Guidance applies while a step's noise level t lies in the interval. t runs from 1 "
    "(the first step, pure noise) down to 0 (the finished song), so this is the late end: 0 guides to the last "
    "step, 0.3 leaves the last steps (t below 0.3) unguided. As in the official ACE-Step studio.",
    "cfg_interval_end": "The early end of the guidance interval (t runs from 1, the first step, down to 0): "
    "1 guides from the first step, 0.8 leaves the first, noisiest steps (t above 0.8) unguided.",
    "guidance_method": "APG (the default) or ADG, angle-based guidance that turns the prediction away from the "
    "unguided one by a bounded angle (base and SFT; turbo runs without guidance).",
    "infer_method": "ODE: the deterministic Euler sampler (default). SDE: after each step the predicted song is "
    "noised again to the next level with fresh noise; more varied, and the seed still reproduces it.",
    "dcw_enabled": "DCW: a small wavelet-domain correction of the latents after each step (the official default "
    "on turbo checkpoints, off on base and SFT). Fades out towards the last step.",
    "cover_noise_strength": "How much of the source the cover starts from: 0 starts from noise (default); higher "
    "values start later in the schedule from the source re-noised, keeping more of it (and running fewer steps).",
    "seed": "The same seed and settings give the same song. -1 picks a new random seed each run.",
    "batch_size": "How many takes to make at once (1-8); take n uses seed + n - 1.",
    "bpm": "Tempo in beats per minute (30-300). Empty lets the model choose.",
    "keyscale": "Musical key, e.g. 'A minor' (typed 'Am', 'F♯ minor' or 'C Major' work too). Empty lets the "
    "model choose.",
    "timesignature": "Beats per bar (2, 3, 4 or 6; typed 4/4 or 6/8 work too). Empty lets the model choose.",
    "src_audio": "The song to work from: WAV, FLAC, OGG or MP3, up to 10 minutes.",
    "reference_audio": "A clip whose voice and instrument timbre the song should borrow (optional; not silent). "
    "Three 10 s pieces of it are heard, picked from the seed.",
    "audio_cover_strength": "The share of the steps (the first ones) that follow the source; the rest follow only "
    "your style and lyrics. 1 follows the source throughout; 0.5 sets the structure, then lets the new style finish.",
    "extend_seconds": "How much new music to add (5-240 s). The whole song is capped at 10 minutes.",
    "extend_where": "Continue after the song's end, or write an intro before its start.",
    "lora_alpha": "The lora_alpha its adapter_config.json states (official LoRAs: 16 at rank 8). Empty: "
    "read from the config or the file; unknown means 1x.",
    "repaint_mode": "How the new part meets the song (the official modes): conservative re-imposes the "
    "source outside the segment at every step and blends 1 s at each edge; balanced does so for part of the "
    "steps (see strength); aggressive lets the model run free. The audio outside stays untouched either way.",
    "repaint_strength": "Balanced only: 0 keeps the most of the source around the segment (like conservative), "
    "1 the least (like aggressive); 0.5 is the official default.",
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
    "reuse_take": "Which take's plan Reuse its plan puts in the form (1 is the first): with Think each take "
    "is its own song, planned as its own codes.",
    "think": "Plan first with ACE-Step's 5 Hz language model: it fills the bpm, key, time signature, "
    "language and length you left empty, can rewrite the style into a fuller caption, and sketches each "
    "take as its own audio codes that the DiT then renders (takes are different songs). Slower, usually "
    "more musical.",
    "lm_rewrite_caption": "Let the planner rewrite the style prompt into a fuller caption (it is saved with "
    "the run). Off keeps your words as they are.",
    "lm_temperature": "Planner randomness: lower is safer and more repetitive, higher more adventurous "
    "(0 always picks the likeliest token).",
    "lm_top_p": "Planner nucleus sampling: only the tokens making up this share of probability are "
    "considered (1 = all).",
    "lm_top_k": "Planner top-k sampling: only the k likeliest tokens are considered (0 = off).",
    "lm_guidance_scale": "How strongly the planner follows your caption and lyrics against the negative "
    "prompt (1 = no guidance, twice as fast).",
    "lm_negative_prompt": "What the planner should steer away from.",
    "audio_codes": "A saved plan's audio codes. When set, Generate renders them as they are (no planning): "
    "the same codes, seed and settings give the same song. Clear it to plan again.",
    "idea": "One line about the song you want; the planner turns it into a style caption, tempo, key and "
    "length (and the lyrics writer, when available, into lyrics) for you to edit.",
    "variance": "How far the new take may wander from this one: 0 gives the same take back, 1 an "
    "entirely fresh take; 0.2 keeps the song and changes details.",
    "edit_method": "Repaint re-makes the segment from scratch. FlowEdit keeps the music (melody, voice, "
    "arrangement) and changes only what the new words or style ask for.",
    "source_prompt": "FlowEdit: the style of the song as it is now.",
    "source_lyrics": "FlowEdit: the song's lyrics as they are now (the target lyrics go in Lyrics).",
    "source_guidance_scale": "FlowEdit: guidance for the source description (turbo ignores it).",
    "n_max": "FlowEdit: how many of the last steps edit the song (empty = two thirds of the steps). More changes more.",
    "n_min": "FlowEdit: the last steps that sample plainly instead of editing (0 = none).",
    "n_avg": "FlowEdit: noise samples averaged per step; more is smoother and slower (1-8).",
    "loras": "The LoRA stack: name-or-sha256:weight items, comma-separated (weight 0-2). Build it with the picker "
    "above; empty means no LoRA, exactly the base model.",
    "lora_triggers": "Add the stack's trigger words to the style prompt.",
    "lora_pick": "LoRAs added here before (kept by content, so the same file never loads twice).",
    "lora_preset": "LoRAs from the Hugging Face Hub the studio knows; downloaded once, then checked like a file.",
    "lyrics_brief": "The song's story, mood or theme, in a line or a paragraph.",
    "lyrics_language": "The language to write (and later sing) in.",
    "lyrics_preset": "A common song form; Custom keeps your own list.",
    "lyrics_structure": "Section names in order, comma-separated: intro, verse, pre-chorus, chorus, bridge, outro…",
    "lyrics_tone": "How it should feel: bittersweet, defiant, playful…",
    "lyrics_lines_per_section": "About how many lines each sung section gets.",
    "lyrics_rhyme_scheme": "Which lines rhyme: one letter per line (ABAB, AABB…), or free.",
    "lyrics_temperature": "Higher writes more surprising lines; lower, safer ones.",
    "lyrics_top_p": "Only the likeliest words making up this share of probability are considered.",
    "lyrics_max_new_tokens": "The longest reply the writer may give (a token is about three quarters of a word).",
}
