import torch

from paretoml.objectives import measure
from paretoml.objectives.compress.prune import prune_unstructured
from paretoml.objectives.train import FinetuneSettings, finetune


def test_finetune_recovers_accuracy_keeps_masks_and_is_deterministic(digits_evaluator):
    ev = digits_evaluator
    b = ev.bundle

    def run(seed):
        model = __import__("copy").deepcopy(b.model)
        masks = prune_unstructured(model, {"fc1": 0.9, "conv2": 0.8})
        before = measure.accuracy(model, b.val_inputs, b.val_labels)
        finetune(model, b.train_inputs, b.train_labels, FinetuneSettings(steps=60, batch_size=32,
                 learning_rate=2e-3, seed=seed), masks)
        return model, masks, before

    model, masks, before = run(0)
    after = measure.accuracy(model, b.val_inputs, b.val_labels)
    assert after > before + 0.05
    assert torch.equal(model.fc1.weight == 0, ~masks["fc1"])
    again, _, _ = run(0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
