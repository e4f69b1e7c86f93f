"""Local stand-ins of the THINGS sources: the THINGS images on OSF (a password-protected
zip and its terms file), THINGS-MEG (OpenNeuro ds004212, a DataLad dataset with MNE's
split FIF epochs and the sample attributes), THINGS-fMRI (OpenNeuro ds004192 and the
single-trial responses in table format from Figshare+) and THINGS-EEG2 (OSF). Same
paths, file names and formats as the real ones; a few kilobytes of made-up values with a
planted image-specific signal."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from standins import save_datalad_dataset, tiny_jpeg, write_api_listing, write_encrypted_zip

THINGS_PASSWORD = "s7and-in"
CONCEPTS = ["aardvark", "banana", "coat_rack", "dog", "ice_cream", "mango", "owl", "spatula",
            "tiger", "umbrella"]
# THINGS names images <concept>_<NN><letter>.jpg (letters: b reference, n ImageNet, s other)
THINGS = [f"{c}_{k:02d}{'bns'[k % 3]}.jpg" for c in CONCEPTS for k in range(1, 41)]
MEG_TEST = THINGS[::40][:8]  # one image of each of 8 concepts, repeated
MEG_EXP = [n for n in THINGS if n not in MEG_TEST][:300]
MEG_SHAPE = (20, 101)  # channels, times (real: 271 x 281)


def make_things_images(root: Path) -> dict:
    """The OSF layout of the THINGS images: ``images_THINGS.zip`` (ZipCrypto, members
    ``object_images/<concept>/<file>``) and ``password_images.txt``."""
    rng = np.random.default_rng(3)
    pixels = {}
    files = {}
    for name in THINGS:
        data = tiny_jpeg(rng)
        files[f"object_images/{name.rsplit('_', 1)[0]}/{name}"] = data
        pixels[name] = data
    write_encrypted_zip(root / "images_THINGS.zip", files, THINGS_PASSWORD)
    (root / "password_images.txt").write_text(
        "THINGS image database - terms of use\n\nThe images may be used for academic "
        "research only and may not be redistributed.\nBy unpacking the archive you agree "
        f"to these terms.\n\nPassword: {THINGS_PASSWORD}\n")
    return {"jpeg": pixels}


def _meg_info(n_channels: int):
    import mne

    regions = "CFOPT"
    names = [f"M{'LR'[k % 2]}{regions[(k // 2) % 5]}{k // 10 + 1}{k % 10}-1609"
             for k in range(n_channels)]
    info = mne.create_info(names, sfreq=100.0, ch_types="mag")
    rng = np.random.default_rng(4)
    with info._unlock():
        for ch in info["chs"]:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            ch["loc"][:3] = 0.1 * direction
            ch["loc"][3:12] = np.eye(3).ravel()
    return info


def _save_in_four_parts(epochs, out: Path) -> None:
    """Save as MNE does the real files: one FIF in four split parts (-epo, -epo-1..3)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in np.arange(1.2, 4.0, 0.05):
            for old in Path(tmp).glob("*"):
                old.unlink()
            epochs.save(Path(tmp) / out.name, split_size=f"{megabytes:.2f}MB", overwrite=True,
                        verbose=False)
            parts = sorted(Path(tmp).glob("*.fif"))
            if len(parts) == 4:
                for part in parts:
                    shutil.move(str(part), str(out.parent / part.name))
                return
    raise AssertionError("could not split the stand-in epochs in four parts")


def make_things_meg(root: Path, subjects=(1,)) -> dict:
    """``ds004212``: ``derivatives/preprocessed/preprocessed_P<k>-epo.fif`` written by MNE
    in four split parts (metadata included, as the authors' step1_preprocessing.py saves
    it) and ``sourcedata/sample_attributes_P<k>.csv``; a DataLad dataset."""
    import mne

    rng = np.random.default_rng(5)
    n_channels, n_times = MEG_SHAPE
    images = MEG_EXP + MEG_TEST
    patterns = {n: rng.normal(size=(n_channels, n_times)) for n in images}
    (root / "derivatives" / "preprocessed").mkdir(parents=True)
    (root / "sourcedata").mkdir()
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "THINGS-MEG", "BIDSVersion": "1.21", "License": "CC0"}))
    truth = {"patterns": patterns, "tables": {}}
    for subject in subjects:
        rows = [("exp", n) for n in MEG_EXP] + [("test", n) for n in MEG_TEST for _ in range(6)]
        rows += [("catch", f"catch{k:03d}.jpg") for k in range(20)]
        order = rng.permutation(len(rows))
        rows = [rows[k] for k in order]
        paths = []
        for kind, name in rows:
            if kind == "exp":
                paths.append(f"images_meg/{name.rsplit('_', 1)[0]}/{name}")
            elif kind == "test":
                paths.append(f"images_test_meg/{name}")
            else:
                paths.append(f"images_catch_meg/{name}")
        n = len(rows)
        table = pd.DataFrame({
            "trial_type": [k for k, _ in rows],
            "session_nr": np.arange(n) * 6 // n + 1,
            "run_nr": (np.arange(n) * 12 // n) % 2 + 1,
            "category_nr": rng.integers(1, 1855, n),
            "exemplar_nr": rng.integers(1, 13, n),
            "things_category_nr": rng.integers(1, 1855, n),
            "things_image_nr": rng.integers(1, 26108, n),
            "test_image_nr": np.nan,
            "image_nr": np.arange(1, n + 1),
            "image_path": paths,
            "image_on": np.arange(n) * 1.5,
            "image_off": np.arange(n) * 1.5 + 0.5,
        })
        data = np.stack([
            (patterns[name] if kind != "catch" else np.zeros((n_channels, n_times)))
            + 0.5 * rng.normal(size=(n_channels, n_times)) for kind, name in rows
        ]) * 1e-12
        events = np.column_stack([np.arange(n) * 300, np.zeros(n, int), table["image_nr"]])
        epochs = mne.EpochsArray(data, _meg_info(n_channels), events=events, tmin=-0.1,
                                 metadata=table, verbose=False)
        _save_in_four_parts(epochs, root / "derivatives" / "preprocessed"
                            / f"preprocessed_P{subject}-epo.fif")
        table.to_csv(root / "sourcedata" / f"sample_attributes_P{subject}.csv", index=False)
        truth["tables"][subject] = table
        truth[f"data{subject}"] = data
    save_datalad_dataset(root, "THINGS-MEG stand-in")
    return truth

