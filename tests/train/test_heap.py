"""train.keep_cpu_heap: freed memory stays in the heap while a CPU run trains (glibc), counted in
the page faults of touching a re-allocated 64 MiB block; the setting never blocks a resume."""

import platform
import resource

import pytest
import torch
from runkit import imagefolder_cfg

from langdml.config import load_config
from langdml.train import heap, train
from langdml.train.checkpoint import same_config

BLOCK = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB): mmapped by default
glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)


def _faults_of_refills(rounds: int, measured: int) -> int:
    """Minor page faults of the last ``measured`` of ``rounds`` fills of a freshly allocated
    block, each freed before the next (a training step's activations, in small)."""
    faults = 0
    for i in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.empty(BLOCK, dtype=torch.uint8).fill_(i)
        del block
        if i >= rounds - measured:
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults


@glibc
def test_kept_heap_reuses_freed_pages_and_gives_them_back_after():
    with heap.kept_heap() as applied:
        # the first rounds grow the heap (each aligned request is a little larger than the
        # hole the last one left, until holes merge), then the same pages serve every round
        kept = _faults_of_refills(16, 4)
    returned = _faults_of_refills(4, 4)  # after: mmapped and unmapped again, faulted anew
    assert applied is True
    assert returned > 0
    assert kept * 4 < returned, (kept, returned)


def test_kept_heap_does_nothing_when_off_or_without_glibc(monkeypatch):
    with heap.kept_heap(False) as applied:
        assert applied is False
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    with heap.kept_heap() as applied:
        assert applied is False


def test_keep_cpu_heap_never_blocks_a_resume():
    saved = load_config(None, {}).to_dict()
    current = load_config(None, {"train.keep_cpu_heap": False}).to_dict()
    assert saved["train"]["keep_cpu_heap"] is True
    assert same_config(saved, current) == []


@pytest.mark.parametrize(
    ("blocks", "keep", "applied"), [("all", True, True), ("all", False, False), (0, True, False)]
)
def test_a_trunk_trains_on_the_cpu_inside_the_kept_heap_when_set(
    emoji_subset_folder, tmp_path, monkeypatch, blocks, keep, applied
):
    """Fine-tuning epochs run in the kept heap; a frozen trunk (a head on cached features)
    allocates too little per step to need it, and its feature cache stays outside."""
    import langdml.train.trainer as trainer

    seen = []
    real = trainer.kept_heap

    def recording(enabled=True):
        seen.append(enabled)
        return real(enabled)

    monkeypatch.setattr(trainer, "kept_heap", recording)
    settings = {
        "model.trainable_blocks": blocks,
        "model.image_size": 32,
        "model.embedding_dim": 8,
        "train.epochs": 1,
        "train.batch_size": 16,
        "train.iterations_per_epoch": 1,
        "train.progress": False,
        "train.keep_cpu_heap": keep,
        "eval.clustering": False,
    }
    train(imagefolder_cfg(emoji_subset_folder, tmp_path / "cache", tmp_path / "run", settings))
    assert seen == [applied]
