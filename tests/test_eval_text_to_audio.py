"""`mmntp eval audio`'s card ceiling: the prompts' own tones through the card, judged alike."""

import torch

from mmntp.data.audio import tone
from mmntp.eval.audio import semitones
from mmntp.eval.text_to_audio import card_ceiling, format_table, tone_prompts
from mmntp.tokenizers.base import Encoded


class _Identity:
    sample_rate = 16_000

    def encode(self, clip):
        return Encoded(torch.from_numpy(clip))

    def decode(self, codes):
        return codes.numpy()


class _Always440(_Identity):
    def decode(self, codes):
        return tone("sine", 440.0, len(codes) / self.sample_rate)


def test_a_lossless_card_keeps_every_prompt():
    result = card_ceiling(_Identity(), tone_prompts(12), seconds=0.3)
    assert result["within_semitone"] == 1.0 and result["median_semitones"] < 0.2


def test_a_card_that_loses_pitch_scores_only_the_prompts_it_happens_to_match():
    prompts = tone_prompts(24)
    expected = sum(semitones(440.0, hz) <= 1.0 for _, hz in prompts) / len(prompts)
    result = card_ceiling(_Always440(), prompts, seconds=0.3)
    assert result["within_semitone"] == expected < 0.5
    assert result["clips"] == 24 and result["unpitched"] == 0


def test_the_table_shows_the_ceiling_beside_the_model():
    row = {"layout": "frame head", "guidance": 3.0, "clips": 2, "within_semitone": 0.5}
    row |= {"median_semitones": 1.0, "unpitched": 0}
    ceiling = {"clips": 2, "within_semitone": 1.0, "median_semitones": 0.1, "unpitched": 0}
    speed = {"layout": "frame head", "first_chunk_s": 0.01, "total_s": 0.2, "rtf": 0.2}
    speed["decode_at_end_first_audio_s"] = 0.21
    report = {"adherence": [row], "card_ceiling": ceiling, "speed": [speed]}
    lines = format_table(report).splitlines()
    assert "50.0%" in lines[1] and lines[2].startswith("card only") and "100.0%" in lines[2]
