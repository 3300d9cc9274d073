"""advinterp's native PGD inside an ART pipeline (needs the advinterp-art plugin).

An ART user gets advinterp's attacks as ordinary ART ``EvasionAttack`` s: call
``generate`` on numpy arrays in their own code, or hand the attack to ART's
``AdversarialTrainer``. Runs in well under a minute on a CPU::

    python examples/art_pipeline.py
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from art.attacks import EvasionAttack
from art.defences.trainer import AdversarialTrainer

import advinterp
from advinterp_art import PGDAttack, art_attack

EPS, STEP = 8 / 255, 2 / 255


def accuracy(classifier, x: np.ndarray, y: np.ndarray) -> float:
    return float((classifier.predict(x).argmax(1) == y).mean())


def main(n_train: int = 256, n_test: int = 64, seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    adapter = advinterp.get_model("synthetic-cnn")
    x_train, y_train = (t.numpy() for t in advinterp.get_dataset("synthetic", n=n_train, split="train").tensors())
    x_test, y_test = (t.numpy() for t in advinterp.get_dataset("synthetic", n=n_test, split="test").tensors())

    # 1. the shipped model as an ART classifier; advinterp's PGD used like any ART attack
    classifier = adapter.to_art()
    pgd = PGDAttack(classifier, eps=EPS, eps_step=STEP, max_iter=10)  # = art_attack("pgd", classifier, ...)
    x_adv = pgd.generate(x_test)  # numpy in, numpy out; y=None: attack the predicted labels
    print(f"{type(pgd).__name__} is an ART EvasionAttack: {isinstance(pgd, EvasionAttack)}; "
          f"max |delta| = {np.abs(x_adv - x_test).max():.4f} (eps {EPS:.4f})")
    print(f"standard model: clean accuracy {accuracy(classifier, x_test, y_test):.2f}, "
          f"PGD accuracy {accuracy(classifier, x_adv, y_test):.2f}")

    # targeted, ART's convention: y holds the targets (one-hot or indices)
    x16, targets = x_test[:16], (y_test[:16] + 1) % classifier.nb_classes
    targeted = art_attack("pgd", classifier, eps=2 * EPS, eps_step=STEP, max_iter=20, targeted=True)
    hit = classifier.predict(targeted.generate(x16, y=np.eye(classifier.nb_classes)[targets])).argmax(1) == targets
    print(f"targeted PGD reaches its target on {hit.mean():.0%} of the images")

    # 2. adversarial training with ART's AdversarialTrainer, on a copy of the module (a short
    #    schedule: robustness rises, clean accuracy drops; train longer for both)
    module = copy.deepcopy(adapter.module)
    student = advinterp.ModelAdapter(module, mean=adapter.mean, std=adapter.std, nb_classes=adapter.nb_classes,
                                     input_shape=adapter.input_shape).to_art(
        optimizer=torch.optim.Adam(module.parameters(), lr=3e-3))
    evaluate = PGDAttack(student, eps=EPS, eps_step=STEP, max_iter=10)  # follows the student's weights
    before = accuracy(student, evaluate.generate(x_test), y_test)
    train_attack = PGDAttack(student, eps=EPS, eps_step=2 * STEP, max_iter=2, num_random_init=1)
    AdversarialTrainer(student, train_attack, ratio=1.0).fit(x_train, np.eye(student.nb_classes)[y_train],
                                                             nb_epochs=2, batch_size=64)
    after = accuracy(student, evaluate.generate(x_test), y_test)
    print(f"after 2 epochs of ART's AdversarialTrainer with advinterp's PGD on {n_train} images: "
          f"clean accuracy {accuracy(student, x_test, y_test):.2f}, PGD accuracy {before:.2f} -> {after:.2f}")


if __name__ == "__main__":
    main()
