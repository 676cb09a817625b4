"""helpers.inference: top-k prediction (order, folders mapped back through class_to_idx, bad inputs,
EXIF), and judging a whole split (every prediction kept in order, the accuracy)."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.data import BadImageError, eval_transform, load_rgb_image, make_loaders
from helpers.inference import Prediction, SplitResult, accuracy, evaluate_split, idx_to_class, predict
from helpers.model import build_model
from helpers.train import evaluate

TINY_CLASS_TO_IDX = {"1": 0, "10": 1, "100": 2, "11": 3, "2": 4, "21": 5}  # ImageFolder's text order


def fixed_output_model(class_to_idx: dict[str, int], scores: list[float], make_backbone) -> nn.Module:
    """A real classifier whose output ignores the image: softmax(scores), in index order."""
    model = build_model(make_backbone(), len(scores), [], pretrained=False)
    with torch.no_grad():
        model.head.output.weight.zero_()
        model.head.output.bias.copy_(torch.tensor(scores))
    model.class_to_idx = class_to_idx
    return model


def softmax(scores: list[float]) -> list[float]:
    exps = [math.exp(s) for s in scores]
    return [e / sum(exps) for e in exps]


@pytest.fixture
def flower(tiny_root):
    return tiny_root / "test" / "1" / "test_000.jpg"


@pytest.fixture
def uniform(make_backbone):
    return fixed_output_model(TINY_CLASS_TO_IDX, [0.0] * 6, make_backbone)


# --- top-k -------------------------------------------------------------------------------------------

def test_folders_sorted_as_text_map_back_to_their_names(flower, make_backbone):
    # Index 2 is folder "100" (text order), not class "3": the classic mix-up.
    scores = [0.0, 1.0, 3.0, -1.0, 2.0, -2.0]
    model = fixed_output_model(TINY_CLASS_TO_IDX, scores, make_backbone)
    result = predict(flower, model, topk=6, device="cpu")
    assert [p.folder for p in result] == ["100", "2", "10", "1", "11", "21"]
    assert [p.probability for p in result] == pytest.approx(sorted(softmax(scores), reverse=True), rel=1e-5)
    assert sum(p.probability for p in result) == pytest.approx(1.0)


def test_one_two_ten(flower, make_backbone):
    model = fixed_output_model({"1": 0, "10": 1, "2": 2}, [0.5, 2.0, 1.0], make_backbone)
    names = {"1": "pink primrose", "2": "hard-leaved pocket orchid", "10": "globe thistle"}
    result = predict(flower, model, topk=2, cat_to_name=names, device="cpu")
    assert result == [Prediction("10", "globe thistle", pytest.approx(softmax([0.5, 2.0, 1.0])[1])),
                      Prediction("2", "hard-leaved pocket orchid", pytest.approx(softmax([0.5, 2.0, 1.0])[2]))]
    assert predict(flower, model, topk=1, device="cpu")[0].name == "10"  # no names: the folder
    model.cat_to_name = names  # names saved with the model are used when none are given
    assert predict(flower, model, topk=1, device="cpu")[0].name == "globe thistle"


def test_top_k_is_ordered_most_probable_first(flower, make_backbone):
    torch.manual_seed(0)
    scores = torch.randn(6).tolist()
    result = predict(flower, fixed_output_model(TINY_CLASS_TO_IDX, scores, make_backbone), topk=4, device="cpu")
    probabilities = [p.probability for p in result]
    assert len(result) == 4 and probabilities == sorted(probabilities, reverse=True)
    assert result[0].folder == idx_to_class(TINY_CLASS_TO_IDX)[max(range(6), key=lambda i: scores[i])]




def test_prediction_after_a_checkpoint_round_trip(tmp_path, flower, make_backbone):
    model = fixed_output_model(TINY_CLASS_TO_IDX, [0.0, 1.0, 3.0, -1.0, 2.0, -2.0], make_backbone)
    path = save_checkpoint(tmp_path / "c.pth", model)
    loaded = load_checkpoint(path, device="cpu", backbone=make_backbone(seed=5))
    assert predict(flower, loaded, topk=3, device="cpu") == predict(flower, model, topk=3, device="cpu")


def test_a_pil_image_works_too(flower, make_backbone):
    model = fixed_output_model(TINY_CLASS_TO_IDX, [0.0, 1.0, 3.0, -1.0, 2.0, -2.0], make_backbone)
    with Image.open(flower) as image:
        assert predict(image.convert("L"), model, topk=1, device="cpu")[0].folder == "100"


def test_predict_sees_the_image_as_validation_does(flower, make_backbone):
    """The one inference path: predict's probabilities are the model's on the validation transform."""
    torch.manual_seed(1)
    model = build_model(make_backbone(), 6, [8], pretrained=False)
    model.class_to_idx = TINY_CLASS_TO_IDX
    with torch.no_grad():
        expected = model.eval()(eval_transform(None)(load_rgb_image(flower)).unsqueeze(0))[0].exp()
    result = predict(flower, model, topk=6, device="cpu")
    assert [p.probability for p in result] == pytest.approx(expected.sort(descending=True).values.tolist(), rel=1e-5)


# --- bad inputs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("topk", [0, -1, 7, 2.5, "3", True])
def test_topk_out_of_range(flower, uniform, topk):
    with pytest.raises(ValueError) as error:
        predict(flower, uniform, topk=topk, device="cpu")
    assert "6" in str(error.value) and repr(topk) in str(error.value)  # the allowed range and the value given


def test_missing_image(tmp_path, uniform):
    with pytest.raises(FileNotFoundError, match="holiday.jpg"):
        predict(tmp_path / "holiday.jpg", uniform, topk=1, device="cpu")


def test_a_folder_given_as_an_image(tiny_root, uniform):
    with pytest.raises(IsADirectoryError) as error:
        predict(tiny_root / "test" / "1", uniform, topk=1, device="cpu")
    assert str(tiny_root / "test" / "1") in str(error.value)


def test_a_broken_image(tmp_path, uniform):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    with pytest.raises(BadImageError, match="broken.jpg"):
        predict(broken, uniform, topk=1, device="cpu")


def test_model_without_class_to_idx(flower, make_backbone):
    model = build_model(make_backbone(), 3, [], pretrained=False)
    with pytest.raises(ValueError, match="class_to_idx"):
        predict(flower, model, topk=1, device="cpu")


# --- EXIF: predicted as a person sees the photo --------------------------------------------------------

class RedOnTheLeft(nn.Module):
    """One feature: how much redder the left half is than the right half."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        half = images.shape[-1] // 2
        red = images[:, 0]
        return (red[..., :half].mean(dim=(1, 2)) - red[..., half:].mean(dim=(1, 2))).unsqueeze(1)


def two_colour_image() -> Image.Image:
    upright = Image.new("RGB", (60, 40), (220, 20, 20))
    upright.paste((20, 20, 220), (30, 0, 60, 40))
    return upright


def test_exif_rotated_photo_is_predicted_as_it_appears(tmp_path):
    model = build_model(RedOnTheLeft(), 2, [], pretrained=False)
    with torch.no_grad():
        model.head.output.weight.copy_(torch.tensor([[5.0], [-5.0]]))
        model.head.output.bias.zero_()
    model.class_to_idx = {"red-left": 0, "red-right": 1}
    upright = two_colour_image()
    assert predict(upright, model, topk=1, device="cpu")[0].folder == "red-left"
    for orientation, stored_as in [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)]:
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"phone-{orientation}.jpg"
        upright.transpose(stored_as).save(path, exif=exif, quality=95)
        guess = predict(path, model, topk=1, device="cpu")[0]
        assert guess.folder == "red-left" and guess.probability > 0.99
        with Image.open(path) as opened:  # an opened PIL image is turned too
            assert predict(opened, model, topk=1, device="cpu")[0].probability > 0.99
        # The stored pixels alone (red on top or bottom) leave the model undecided.
        assert predict(upright.transpose(stored_as), model, topk=1, device="cpu")[0].probability < 0.6


# --- a whole split --------------------------------------------------------------------------------------

def made_up_result(paths: list[str] | None = None) -> SplitResult:
    """Three classes; class "a" all right, "b" one of two wrong (as "c"), "c" both wrong (as "a")."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 1, 2, 0, 0])
    probabilities = torch.full((6, 3), 0.1)
    for row, (guess, confidence) in enumerate(zip(predicted.tolist(), [0.8, 0.8, 0.8, 0.6, 0.7, 0.5])):
        probabilities[row, guess] = confidence
    return SplitResult(labels, predicted, probabilities, ["a", "b", "c"], paths or [])


def test_accuracy_is_the_share_of_right_answers():
    assert accuracy(made_up_result()) == pytest.approx(3 / 6)


@pytest.fixture
def model_and_loaders(tiny_root, make_backbone):
    loaders = make_loaders(tiny_root, batch_size=4, eval_tf=eval_transform(None), num_workers=0)
    torch.manual_seed(0)
    model = build_model(make_backbone(), 6, hidden_units=[8], pretrained=False)
    return model, loaders


def test_evaluate_split_keeps_every_prediction_in_dataset_order(model_and_loaders):
    model, loaders = model_and_loaders
    dataset = loaders["test"].dataset
    result = evaluate_split(model, loaders["test"], device="cpu")
    assert result.labels.tolist() == dataset.targets
    assert result.paths == [path for path, _ in dataset.samples]
    assert result.classes == dataset.classes
    assert result.probabilities.shape == (len(dataset), len(dataset.classes))
    assert torch.allclose(result.probabilities.sum(dim=1), torch.ones(len(dataset)), atol=1e-5)
    assert torch.equal(result.predicted, result.probabilities.argmax(dim=1))
    assert not model.training  # evaluation mode: no dropout while predicting


def test_test_accuracy_is_the_same_number_as_evaluate(model_and_loaders):
    model, loaders = model_and_loaders
    result = evaluate_split(model, loaders["test"], device="cpu")
    assert accuracy(result) == pytest.approx(evaluate(model, loaders["test"], device="cpu")["accuracy"])


def test_evaluate_split_refuses_a_shuffled_loader(model_and_loaders):
    model, loaders = model_and_loaders
    shuffled = DataLoader(loaders["test"].dataset, batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="unshuffled"):
        evaluate_split(model, shuffled, device="cpu")
