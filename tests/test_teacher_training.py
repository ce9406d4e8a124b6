import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from models.packaged import minilm_dir
from models.relevance.teacher import CrossEncoderTeacher, TeacherSettings
from models.relevance.teacher_inference import collate, encode_pairs, predict_proba
from models.relevance.teacher_settings import TrainSettings
from models.relevance.teacher_training import length_sorted_batches, train

WORDS = ["sofa", "lamp", "rug", "desk", "chair", "vase", "mirror", "shelf", "clock", "quilt", "kettle", "towel"]


def synthetic(n, seed):
    """Label 4 when the text names the query's item, 1 when it names another."""
    r = np.random.default_rng(seed)
    queries, texts, labels = [], [], []
    for _ in range(n):
        q = WORDS[r.integers(len(WORDS))]
        hit = r.random() < 0.5
        item = q if hit else WORDS[(WORDS.index(q) + 1 + r.integers(len(WORDS) - 1)) % len(WORDS)]
        filler = " ".join(r.choice(["modern", "cozy", "wooden", "grey", "large", "small"], r.integers(1, 12)))
        queries.append(f"{q}")
        texts.append(f"{filler} {item} for the home")
        labels.append(3 if hit else 0)  # level index: 4 -> 3, 1 -> 0
    return queries, texts, labels


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_dir())


def test_encoding_respects_budgets(tokenizer):
    s = TrainSettings(max_length=16, query_tokens=3)
    enc = encode_pairs(tokenizer, ["a very long query about many things"], ["text " * 50], s, [0])
    ids = enc.input_ids[0]
    assert len(ids) == 16 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids.index(tokenizer.sep_token_id) == 4  # [CLS] + 3 query tokens
    with pytest.raises(ValueError, match="query_tokens"):
        TrainSettings(max_length=16, query_tokens=14)


def test_length_sorted_batches_pad_less_and_cover_everything():
    r = np.random.default_rng(0)
    lengths = r.integers(5, 200, 5000)
    batches = length_sorted_batches(lengths, 32, 50, np.random.default_rng(1))
    assert sorted(np.concatenate(batches)) == list(range(5000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.array_split(r.permutation(5000), len(batches))
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.7 * padded_random
    assert lengths.sum() / padded > 0.9  # >90% of the tokens computed are real


def test_collate_pads_to_the_batch_longest(tokenizer):
    enc = encode_pairs(tokenizer, ["a", "b c d"], ["x", "y z w v"], TrainSettings(), [0, 1])
    ids, mask = collate(enc, np.array([0, 1]), 0, torch.device("cpu"))
    assert ids.shape == (2, max(enc.lengths)) and mask.sum().item() == enc.lengths.sum()


@pytest.fixture(scope="module")
def data(tokenizer):
    s = TrainSettings(max_length=32, query_tokens=8, batch_size=16, epochs=3, lr=1e-4, progress=False)
    tq, tt, tl = synthetic(320, 0)
    vq, vt, vl = synthetic(96, 1)
    return s, encode_pairs(tokenizer, tq, tt, s, tl), encode_pairs(tokenizer, vq, vt, s, vl)


def fresh_model():
    torch.manual_seed(0)
    return CrossEncoderTeacher.build(TeacherSettings(backbone_path=str(minilm_dir()), head_hidden=64, dropout=0.0))


def test_predict_proba_restores_input_order(data, tokenizer):
    _, _, val = data
    model = fresh_model().eval()
    probs = predict_proba(model, val, 7, tokenizer.pad_token_id)
    one = [
        predict_proba(model, type(val)([val.input_ids[i]], val.labels[[i]], val.query_ids[[i]]), 1, 0)[0]
        for i in (0, 5, 50)
    ]
    np.testing.assert_allclose(probs[[0, 5, 50]], np.array(one), atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


@pytest.mark.slow  # trains the real MiniLM twice: ~1.5 min alone on 2 cores, more under load
def test_minilm_teacher_learns_and_is_deterministic(data, tokenizer):
    settings, train_set, val_set = data
    levels = [1, 2, 3, 4]
    first = train(fresh_model(), train_set, val_set, settings, levels, tokenizer.pad_token_id)
    assert first.best.kappa > 0.8 and first.best.auroc_at[4] > 0.95
    assert first.history[-1]["train_loss"] < first.history[0]["train_loss"]
    second = train(fresh_model(), train_set, val_set, settings, levels, tokenizer.pad_token_id)
    for a, b in zip(first.history, second.history, strict=False):
        for key in ("train_loss", "val_kappa", "val_accuracy", "val_ndcg_at_20"):
            assert a[key] == pytest.approx(b[key], abs=1e-6)


def test_unlabelled_pairs_are_refused(data, tokenizer):
    settings, train_set, val_set = data
    bad = type(train_set)(train_set.input_ids[:4], np.array([0, -1, 2, 3]), train_set.query_ids[:4])
    with pytest.raises(ValueError, match="needs a label"):
        train(fresh_model(), bad, val_set, settings, [1, 2, 3, 4], tokenizer.pad_token_id)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("gpu_dtype", ["bfloat16", "float16"])
def test_full_fine_tune_on_cuda_is_mixed_precision(data, tokenizer, gpu_dtype):
    settings, train_set, val_set = data
    torch.manual_seed(0)
    model = CrossEncoderTeacher.build(
        TeacherSettings(backbone_path=str(minilm_dir()), head_hidden=64, dropout=0.0, gpu_dtype=gpu_dtype),
        torch.device("cuda:0"),
    )
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    before = model.backbone.encoder.layer[0].attention.self.query.weight.detach().clone()
    result = train(model, train_set, val_set, settings, [1, 2, 3, 4], tokenizer.pad_token_id)
    after = model.backbone.encoder.layer[0].attention.self.query.weight.detach()
    assert result.best.kappa > 0.8 and all(np.isfinite(h["train_loss"]) for h in result.history)
    assert after.dtype == torch.float32 and (after != before).float().mean() > 0.9  # the backbone really moved
