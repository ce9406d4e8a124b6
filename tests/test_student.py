import numpy as np
import pyarrow as pa
import pytest
import torch

from models.relevance.student import (
    CLICK,
    RELEVANCE,
    SAVE,
    CrossNetwork,
    MMoEStudent,
    build_student,
    load_student,
    save_student,
)
from models.relevance.student_scoring import dense_features, dense_vectors, predict_relevance
from models.relevance.student_settings import StudentSettings, StudentTrainSettings
from models.relevance.student_training import StudentData, StudentLoss, batches, ranknet, train_student
from schemas import student_features as SF

D, K, L = 8, 3, 4


def data(n=96, seed=0) -> StudentData:
    """Rows whose teacher level depends on the query-pin dot product (learnable)."""
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, D)).astype(np.float32)
    p = rng.normal(size=(n, D)).astype(np.float32)
    score = (q * p).sum(1)
    logits = np.stack([-score, -0.3 * score, 0.3 * score, score], 1) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    human = np.where(rng.random(n) < 0.3, probs.argmax(1), -1)
    return StudentData(
        query=q,
        pin=p,
        dense=rng.normal(size=(n, K)).astype(np.float32),
        query_ids=rng.integers(0, 6, n),
        teacher_probs=probs.astype(np.float32),
        has_teacher=np.ones(n, bool),
        human_level=human.astype(np.int64),
        click_rate=rng.random(n).astype(np.float32),
        save_rate=(rng.random(n) * 0.2).astype(np.float32),
        impressions=rng.integers(0, 5, n).astype(np.float32),
    )


def batch_of(d: StudentData) -> dict[str, torch.Tensor]:
    return d.tensors(np.arange(len(d)), torch.device("cpu"))


def outputs_of(model, batch):
    return model(batch["query"], batch["pin"], batch["dense"])


@pytest.mark.parametrize("kind", ["mlp", "mmoe"])
def test_students_give_level_logits_and_mmoe_gives_engagement_towers(kind):
    model = build_student(StudentSettings(kind=kind, hidden=[16], expert_dim=8, tower_hidden=4, cross_rank=4), D, K)
    out = outputs_of(model, batch_of(data(10)))
    assert out[RELEVANCE].shape == (10, L)
    if kind == "mmoe":
        assert out[CLICK].shape == (10,) and out[SAVE].shape == (10,)
        assert len(model.experts) == 3 and set(model.gates) == {RELEVANCE, CLICK, SAVE}
        gates = model.gate_weights(model.inputs(*(batch_of(data(10))[k] for k in ("query", "pin", "dense"))))
        for weights in gates.values():
            assert weights.shape == (10, 3)
            torch.testing.assert_close(weights.sum(1), torch.ones(10))
        assert all(isinstance(g, torch.nn.Linear) for g in model.gates.values())  # the light default gate
    else:
        assert set(out) == {RELEVANCE}


def test_cross_network_is_dcn_v2():
    torch.manual_seed(0)
    net = CrossNetwork(5, layers=2, rank=0)
    x0 = torch.randn(3, 5)
    x1 = x0 * net.cross[0](x0) + x0
    torch.testing.assert_close(net(x0), x0 * net.cross[1](x1) + x1)
    low = CrossNetwork(5, layers=1, rank=2)
    assert low.cross[0][0].weight.shape == (2, 5)


def test_pointwise_distillation_is_kl_to_the_teacher_distribution():
    d = data(32)
    model = build_student(StudentSettings(hidden=[16]), D, K)
    out = outputs_of(model, batch_of(d))
    s = StudentTrainSettings(distillation="pointwise", human_weight=0.0, engagement_weight=0.0)
    terms = StudentLoss(s).terms(out, batch_of(d))
    assert set(terms) == {"soft"}
    teacher = torch.as_tensor(d.teacher_probs)
    log_student = torch.log_softmax(out[RELEVANCE], -1)
    expected = (teacher * (teacher.log() - log_student)).sum(1).mean()
    torch.testing.assert_close(terms["soft"], expected)


def test_ranknet_only_pairs_rows_of_one_query_the_teacher_orders():
    student = torch.tensor([1.0, 2.0, 0.0, 5.0])
    teacher = torch.tensor([3.0, 1.0, 2.0, 1.0])
    queries = torch.tensor([0, 0, 1, 2])
    loss = ranknet(student, teacher, queries, margin=0.5)
    torch.testing.assert_close(loss, torch.nn.functional.softplus(torch.tensor(-(1.0 - 2.0))))
    assert ranknet(student, teacher, torch.tensor([0, 1, 2, 3]), margin=0.5) is None


def loss_with(settings: StudentTrainSettings, d: StudentData, model) -> dict[str, torch.Tensor]:
    return StudentLoss(settings).terms(outputs_of(model, batch_of(d)), batch_of(d))


@pytest.mark.parametrize("distillation", ["pointwise", "pairwise", "both"])
def test_incremental_training_applies_no_distillation_term(distillation):
    """Two teachers that agree on every most-likely level but not on the distribution: with
    ``incremental=True`` the loss (and its gradient) must not tell them apart."""
    torch.manual_seed(0)
    settings = StudentSettings(kind="mmoe", hidden=[16], expert_dim=8, tower_hidden=4, cross_rank=4, dropout=0.0)
    model = build_student(settings, D, K)
    a = data(64)
    b = data(64)
    sharpened = a.teacher_probs**3
    b.teacher_probs = (sharpened / sharpened.sum(1, keepdims=True)).astype(np.float32)
    assert (a.teacher_probs.argmax(1) == b.teacher_probs.argmax(1)).all()
    batch_mode = StudentTrainSettings(distillation=distillation, pairwise_margin=0.0)
    incremental = StudentTrainSettings(distillation=distillation, pairwise_margin=0.0, incremental=True)

    def total_and_grad(settings, d):
        model.zero_grad()
        terms = loss_with(settings, d, model)
        loss = torch.stack(list(terms.values())).sum()
        loss.backward()
        return terms, loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    terms_a, loss_a, grad_a = total_and_grad(incremental, a)
    _, loss_b, grad_b = total_and_grad(incremental, b)
    assert not {"soft", "pairwise"} & set(terms_a) and "hard" in terms_a
    assert loss_a == loss_b
    for ga, gb in zip(grad_a, grad_b, strict=True):
        torch.testing.assert_close(ga, gb)
    # In batch training the same two teachers do give different losses: distillation is on.
    distilled = loss_with(batch_mode, a, model)
    assert {"soft", "pairwise"} & set(distilled)
    assert sum(v.item() for v in distilled.values()) != sum(v.item() for v in loss_with(batch_mode, b, model).values())


def test_query_batches_keep_each_querys_rows_together():
    d = data(96)
    rng = np.random.default_rng(1)
    chunks = batches(d, 16, rng, by_query=True)
    order = np.concatenate(chunks)
    assert sorted(order) == list(range(96))
    ids = d.query_ids[order]
    assert (np.diff(ids) != 0).sum() == len(np.unique(ids)) - 1  # each query one contiguous run


@pytest.mark.parametrize("kind", ["mlp", "mmoe"])
def test_training_learns_the_teacher_and_keeps_the_best_epoch(kind):
    torch.manual_seed(0)
    train, val = data(512, seed=0), data(256, seed=1)
    model = build_student(StudentSettings(kind=kind, hidden=[32], expert_dim=16, tower_hidden=8, cross_rank=4), D, K)
    model.inputs.fit(train.dense)

    def agreement(m):
        probs = predict_relevance(m, val.query, val.pin, val.dense, 128)
        return float((probs.argmax(1) == val.teacher_probs.argmax(1)).mean())

    before = agreement(model)
    settings = StudentTrainSettings(batch_size=64, epochs=8, lr=3e-3, patience=8, distillation="both")
    result = train_student(model, train, settings, agreement)
    assert result.best_score == max(h["validation_kappa"] for h in result.history)
    assert agreement(model) == pytest.approx(result.best_score)  # the best epoch's weights are kept
    assert result.best_score > max(before, 0.6)


def test_saved_student_loads_to_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = build_student(StudentSettings(kind="mmoe", hidden=[16], expert_dim=8, tower_hidden=4, cross_rank=2), D, K)
    d = data(20)
    model.inputs.fit(d.dense)
    model.eval()
    folder = save_student(model, tmp_path / "s")
    loaded, meta = load_student(folder)
    assert isinstance(loaded, MMoEStudent) and meta["embedding_dim"] == D
    np.testing.assert_allclose(
        predict_relevance(loaded, d.query, d.pin, d.dense, 8), predict_relevance(model, d.query, d.pin, d.dense, 8)
    )
    bf16 = predict_relevance(model, d.query, d.pin, d.dense, 8, precision="bf16")
    np.testing.assert_allclose(bf16, predict_relevance(model, d.query, d.pin, d.dense, 8), atol=0.05)


def test_dense_vectors_read_the_packed_column_as_the_named_columns_and_refuse_short_or_null_rows():
    rng = np.random.default_rng(0)
    n, width = 6, len(SF.DENSE)
    named = rng.random((n, width)) * 100
    packed = pa.array([row.astype(np.float32).tolist() for row in named], pa.list_(pa.float32()))
    expected = dense_features([named[:, i] for i in range(width)])
    np.testing.assert_array_equal(dense_vectors(packed), expected)
    np.testing.assert_array_equal(dense_vectors(packed.slice(2, 3)), expected[2:5])  # Arrow slices keep offsets
    with pytest.raises(ValueError, match="must hold 8 values a row"):
        dense_vectors(pa.array([[1.0] * width, [1.0] * (width - 1)], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="none null"):
        dense_vectors(pa.array([[1.0] * width, None], pa.list_(pa.float32())))
