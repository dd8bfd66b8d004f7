"""The alignment rewards on hand-written prompts, the critic's score parser and cache,
the step log and the scorer behind ``chainzoom prompts --score``. No model is loaded."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from PIL import Image

from chainzoom.align.critic import Critic, CriticReward, OpenAICritic, ScoreCache, parse_score
from chainzoom.align.log import StepLog, plot_curves
from chainzoom.align.rewards import PhraseReward, RepetitionReward, Weighted, parse_weights, score_prompts
from chainzoom.align.session import format_scores, score_prompts_with
from chainzoom.errors import ChainZoomError

CLEAN = "orange tabby cat, fur, whiskers, wooden table, window light"


def pair(shade: int = 0) -> tuple[Image.Image, Image.Image]:
    return Image.new("RGB", (8, 8), (shade, 10, 20)), Image.new("RGB", (8, 8), (20, shade, 10))


@pytest.mark.parametrize(
    "prompt",
    [
        "The first image shows a cat",
        "in the SECOND   image: fur, whiskers",
        "the image shows fur",
        "zoomed-in view of bark",
    ],
)
def test_phrase_reward_penalises_viewpoint_phrases(prompt):
    assert PhraseReward().score([prompt]) == [-1.0]


def test_phrase_reward_leaves_clean_prompts_and_whole_words_only():
    reward = PhraseReward()
    assert reward.score([CLEAN, "imagery of a firstimage-like mural", ""]) == [0.0, 0.0, 0.0]
    assert reward.found("The first image and the second image") == ["first image", "second image"]


def test_phrase_list_is_configurable():
    reward = PhraseReward(["high quality"])
    assert reward.score(["first image, cat", "cat, High  Quality"]) == [0.0, -1.0]
    with pytest.raises(ChainZoomError, match="empty"):
        PhraseReward(["  "])


def test_repetition_reward_penalises_repeats_not_clean_prompts():
    reward = RepetitionReward()
    paper_failure, word, clean, sentence = reward.score(
        ["fur texture orange fur texture orange fur texture", "cat cat cat cat", CLEAN, "a cat on a sofa by a window"]
    )
    assert paper_failure < -0.5
    assert word == pytest.approx(-0.75)
    assert clean == 0.0
    assert sentence == 0.0  # repeated function words are not repeated concepts


def test_repetition_reward_counts_repeated_phrases():
    # Content words: top, tree, top, hill (1 of 4 repeated); bigrams: "top of" and "of the"
    # come twice among 7 (2 of 7 repeated), so the bigram share decides.
    assert RepetitionReward().score(["top of the tree, top of the hill"]) == [pytest.approx(-(1 - 5 / 7))]


def test_parse_weights():
    assert parse_weights("critic=1.0,phrase=0.5,repetition=0.5") == {"critic": 1.0, "phrase": 0.5, "repetition": 0.5}
    assert parse_weights("phrase=0.5, repetition=0") == {"phrase": 0.5}
    assert parse_weights("repetition") == {"repetition": 1.0}
    for bad, message in [
        ("style=1", "unknown reward"),
        ("phrase=x", "must be a number"),
        ("phrase=0", "nonzero"),
        ("phrase=1,phrase=2", "twice"),
    ]:
        with pytest.raises(ChainZoomError, match=message):
            parse_weights(bad)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("7", 0.7),
        ("Score: 8/10", 0.8),
        ("**9**", 0.9),
        ("I would rate it 4 out of 5.", 0.8),
        ("8.5\n", 0.85),
        ("10", 1.0),
        ("0 - nothing matches", 0.0),
    ],
)
def test_parse_score_well_formed(answer, expected):
    assert parse_score(answer) == pytest.approx(expected)


@pytest.mark.parametrize("answer", ["", "no idea", "excellent!", "12", "-1", "7/5", "11 out of 10"])
def test_parse_score_malformed_or_out_of_range(answer):
    assert parse_score(answer) is None


class ScriptedCritic(Critic):
    """Answers from a script and counts the questions it is asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def identity(self) -> dict:
        return {"critic": "scripted"}

    def answer(self, items):
        self.asked.extend(prompt for _, prompt in items)
        return [self.answers[prompt] for _, prompt in items]


def test_critic_reward_scores_caches_and_persists(tmp_path):
    critic = ScriptedCritic({"cat": "Score: 9", "dog": "I cannot tell", "sky": "3/10"})
    cache_file = tmp_path / "critic_cache.jsonl"
    reward = CriticReward(critic, ScoreCache(cache_file))
    pairs = [pair(1), pair(1), pair(1), pair(2)]
    assert reward.score(["cat", "dog", "cat", "sky"], pairs) == pytest.approx([0.9, 0.0, 0.9, 0.3])
    assert sorted(critic.asked) == ["cat", "dog", "sky"]  # the repeated (pair, prompt) was asked once
    assert reward.metrics() == {"unusable": pytest.approx(1 / 4)}  # "dog" had no number

    again = CriticReward(critic, ScoreCache(cache_file))  # a resumed run reads the file back
    assert again.score(["cat", "sky"], [pair(1), pair(2)]) == pytest.approx([0.9, 0.3])
    assert len(critic.asked) == 3
    again.score(["cat"], [pair(3)])  # other images: a new question
    assert critic.asked[-1] == "cat" and len(critic.asked) == 4


def test_score_cache_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "a", "score": 0.5}) + "\n" + '{"key": "b", "sco')
    assert ScoreCache(path).scores == {"a": 0.5}


def test_critic_reward_needs_pairs():
    with pytest.raises(ChainZoomError, match="image pair"):
        CriticReward(ScriptedCritic({})).score(["cat"])


def test_score_prompts_weighted_total_and_scorer():
    parts = [Weighted(PhraseReward(), 0.5), Weighted(RepetitionReward(), 0.5)]
    rows = score_prompts(["first image, cat cat", CLEAN], parts)
    assert rows[0]["phrase"] == -1.0 and rows[0]["repetition"] == pytest.approx(-0.25)  # 3 of 4 words distinct
    assert rows[0]["total"] == pytest.approx(0.5 * -1.0 + 0.5 * -0.25)
    assert rows[1] == {"phrase": 0.0, "repetition": 0.0, "total": 0.0}
    assert score_prompts_with(["first image, cat cat", CLEAN], "phrase=0.5,repetition=0.5") == rows
    assert "phrase=-1.000" in format_scores(["first image, cat cat", CLEAN], rows).splitlines()[0]
    with pytest.raises(ChainZoomError, match="image pair"):
        score_prompts_with([CLEAN], "critic=1")


def test_openai_critic_asks_with_both_images_and_the_prompt():
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"choices": [{"message": {"content": "Rating: 7/10"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        critic = OpenAICritic(f"http://127.0.0.1:{server.server_port}/v1,model=judge")
        assert CriticReward(critic).score(["a cat"], [pair(5)]) == [pytest.approx(0.7)]
    finally:
        server.shutdown()
    content = seen[0]["messages"][0]["content"]
    assert [part["type"] for part in content] == ["image_url", "image_url", "text"]
    assert "'a cat'" in content[2]["text"] and seen[0]["model"] == "judge" and seen[0]["temperature"] == 0.0


def test_step_log_truncates_on_resume_and_plots(tmp_path):
    log = StepLog(tmp_path / "log.csv", ["phrase", "repetition"])
    log.truncate(0)
    for step in (1, 2, 3):
        log.append({"step": step, "reward": -0.1 * step, "phrase": 0, "repetition": -0.2 * step, "kl": 0.01 * step})
    log.truncate(2)
    assert [row["step"] for row in log.rows()] == ["1", "2"]
    png = plot_curves(tmp_path / "log.csv", tmp_path / "curves.png", {"phrase": 0.5, "repetition": 0.5})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_flags_make_the_configs():
    from chainzoom.cli import build_parser
    from chainzoom.cli.parsing import flags_of
    from chainzoom.config import AlignConfig, PromptsConfig, from_mapping

    args = build_parser().parse_args(["prompts", "x.png", "--score", "--reward", "phrase=1", "--phrases", "list.txt"])
    config = from_mapping(PromptsConfig, flags_of(args), "flags")
    assert (config.score, config.reward, config.critic, config.phrases) == (True, "phrase=1", None, "list.txt")

    args = build_parser().parse_args(["align", "--images", "photos", "--gradient-checkpointing"])
    config = from_mapping(AlignConfig, flags_of(args), "flags")
    assert config.reward == "critic=1.0,phrase=0.5,repetition=0.5" and config.policy == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert config.gradient_checkpointing and config.images == ("photos",)
