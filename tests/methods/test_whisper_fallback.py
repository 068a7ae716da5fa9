"""Temperature fallback: only failed windows go round again, batched, with whisper's thresholds;
seeded sampling gives a window the same draw in any batch."""
from __future__ import annotations

import torch
import whisper

from stages.methods.whisper_batch import WindowResult, decode_windows
from stages.methods.whisper_fallback import FallbackRules, decode_with_fallback

OPTIONS = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)


def _result(text="fine words", lp=-0.2, ns=0.01, cr=1.1, t=0.0) -> WindowResult:
    return WindowResult(text=text, tokens=[1, 2], sum_logprob=3 * lp, avg_logprob=lp, no_speech_prob=ns,
                        language="en", nbest=[(text, 3 * lp)], compression_ratio=cr, temperature=t)


class FakeDecoder:
    """Scripted results per (window, temperature); records every call."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def __call__(self, model, mel, options, seeds):
        ids = mel.tolist()
        self.calls.append((ids, options.temperature, options.beam_size))
        return [self.script(i, options.temperature) for i in ids]


def _run(script, n, **kw):
    fake = FakeDecoder(script)
    out = decode_with_fallback(None, lambda ids: torch.tensor(ids), n, OPTIONS, decode=fake, **kw)
    return out, fake.calls


def test_a_repetition_loop_is_decoded_again_at_0_2_and_only_that_window():
    def script(i, t):
        if i == 2 and t == 0:
            return _result("the the the the the the the the the the the the", cr=4.2, t=t)
        return _result(f"window {i}", t=t)

    out, calls = _run(script, 5, batch_size=4)
    assert calls == [([0, 1, 2, 3], 0.0, None), ([4], 0.0, None), ([2], 0.2, None)]
    assert [r.text for r in out] == ["window 0", "window 1", "window 2", "window 3", "window 4"]
    assert out[2].temperature == 0.2


def test_failed_windows_stay_batched_through_the_ladder_and_the_best_readable_attempt_wins():
    logprobs = {0.0: -1.5, 0.2: -1.2, 0.4: -1.1, 0.6: -1.9, 0.8: -2.0, 1.0: -1.3}

    def script(i, t):
        if i in (1, 3):  # never confident: every temperature is tried
            return _result(f"w{i} at {t}", lp=logprobs[t], cr=9.0 if t == 0.4 else 1.2, t=t)
        return _result(t=t)

    out, calls = _run(script, 4, batch_size=8)
    assert [(ids, t) for ids, t, _ in calls] == [([0, 1, 2, 3], 0.0)] + [([1, 3], t) for t in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert out[1].text == "w1 at 0.2"  # -1.1 at 0.4 loops (ratio 9.0), so -1.2 at 0.2 is the best readable one


def test_whisper_s_no_speech_gate_stops_the_fallback():
    out, calls = _run(lambda i, t: _result("", lp=-1.4, ns=0.9, t=t), 3)
    assert len(calls) == 1 and FallbackRules().silent(out[0])
    out, calls = _run(lambda i, t: _result("", lp=-1.4, ns=0.5, t=t), 3)  # not silent enough: sampled again
    assert len(calls) == 6


def test_beams_are_dropped_when_sampling():
    beam = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, beam_size=3)
    fake = FakeDecoder(lambda i, t: _result(lp=-5.0 if t == 0 else -0.1, t=t))
    decode_with_fallback(None, lambda ids: torch.tensor(ids), 2, beam, decode=fake)
    assert [(t, b) for _, t, b in fake.calls] == [(0.0, 3), (0.2, None)]


def test_seeded_sampling_is_the_same_alone_or_in_a_batch(tiny_whisper):
    model = whisper.load_model(str(tiny_whisper), device="cpu")
    torch.manual_seed(0)
    mel = torch.randn(3, 80, 400)
    # the random model's logits are sharp: a hot temperature makes the draws depend on the seed
    hot = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False, temperature=30.0)
    together = decode_windows(model, mel, hot, seeds=[11, 22, 33])
    alone = [decode_windows(model, mel[i:i + 1], hot, seeds=[s])[0] for i, s in enumerate([11, 22, 33])]
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert all(r.temperature == 30.0 for r in together)
    other = decode_windows(model, mel, hot, seeds=[12, 23, 34])
    assert [r.tokens for r in other] != [r.tokens for r in together]  # the seed, not luck, fixes the draw
    greedy = decode_windows(model, mel, OPTIONS)
    assert [r.tokens for r in greedy] != [r.tokens for r in together]
