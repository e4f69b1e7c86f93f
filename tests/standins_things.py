"""Local stand-ins of the THINGS sources: the THINGS images on OSF (a password-protected
zip and its terms file), THINGS-MEG (OpenNeuro ds004212, a DataLad dataset with MNE's
split FIF epochs and the sample attributes), THINGS-fMRI (OpenNeuro ds004192 and the
single-trial responses in table format from Figshare+) and THINGS-EEG2 (OSF). Same
paths, file names and formats as the real ones; a few kilobytes of made-up values with a
planted image-specific signal."""

from __future__ import annotations

import io
import json
import tempfile
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



FMRI_GRID = (6, 7, 5)  # the real functional grid is about (77, 94, 80)
FMRI_SESSIONS = 3  # real: 12
FMRI_TEST = THINGS[5::40][:6]  # repeated in every session (real: 100)
FMRI_TRAIN = [n for n in THINGS[::3] if n not in FMRI_TEST][:36]  # once each (real: 8,640)
FIGSHARE_BETAS = "ndownloader/files/43635873"
FIGSHARE_MASKS = "ndownloader/files/36682242"
FMRI_ROIS = ["V1", "V2", "V3", "hV4", "VO1", "VO2", "LO1 (prf)", "LO2 (prf)", "TO1", "TO2",
             "V3b", "V3a", "lEBA", "rEBA", "lFFA", "rFFA", "lOFA", "rOFA", "lSTS", "rSTS",
             "lPPA", "rPPA", "lRSC", "rRSC", "lTOS", "rTOS", "lLOC", "rLOC", "IT",
             "glasser-V1", "glasser-V2", "glasser-FFC"]


def write_pandas_frame(path: Path, key: str, voxel_ids: np.ndarray, values: np.ndarray) -> None:
    """An HDF5 file laid out as ``DataFrame.to_hdf(key=..., format='fixed')`` writes a frame
    of an int ``voxel_id`` column and float columns 0..n-1 (PyTables attributes included;
    h5py suffices to write it)."""
    import h5py

    def attrs(obj, **extra):
        for k, v in {"CLASS": b"ARRAY", "FLAVOR": b"numpy", "VERSION": b"2.4",
                     "transposed": np.uint8(1), **extra}.items():
            obj.attrs[k] = v

    with h5py.File(path, "w") as f:
        f.attrs["CLASS"], f.attrs["PYTABLES_FORMAT_VERSION"] = b"GROUP", b"2.1"
        g = f.create_group(key)
        for k, v in {"CLASS": b"GROUP", "VERSION": b"1.0", "pandas_type": b"frame",
                     "pandas_version": b"0.15.2", "encoding": b"UTF-8", "errors": b"strict",
                     "ndim": np.int64(2), "nblocks": np.int64(2)}.items():
            g.attrs[k] = v
        attrs(g.create_dataset("axis1", data=np.arange(len(voxel_ids))), kind=b"integer")
        attrs(g.create_dataset("block0_values", data=values.astype(np.float32)))
        attrs(g.create_dataset("block0_items", data=np.arange(values.shape[1])), kind=b"integer")
        attrs(g.create_dataset("block1_values", data=voxel_ids.astype(np.int64)[:, None]))
        attrs(g.create_dataset("block1_items", data=np.array([b"voxel_id"])), kind=b"string")


def make_things_fmri(openneuro: Path, figshare: Path, subjects=(1, 2)) -> dict:
    """``ds004192`` (a DataLad dataset: BIDS events of the THINGS runs) and the Figshare+
    files: ``betas_csv.zip`` (``betas_csv/sub-XX_ResponseData.h5`` in pandas' HDF5 layout,
    ``_StimulusMetadata.csv``, ``_VoxelMetadata.csv``; ViCCo-Group/THINGS-data's
    fmri_usage.ipynb) and ``brain_masks.zip`` (``sub-XX_space-T1w_brainmask.nii.gz``),
    served as ``ndownloader/files/<id>``."""
    import nibabel as nib

    rng = np.random.default_rng(6)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-6.0, -8.0, -4.0]
    truth = {"affine": affine}
    betas_zip = io.BytesIO()
    masks_zip = io.BytesIO()
    with zipfile.ZipFile(betas_zip, "w", zipfile.ZIP_DEFLATED) as bz, \
            zipfile.ZipFile(masks_zip, "w", zipfile.ZIP_DEFLATED) as mz, \
            tempfile.TemporaryDirectory() as tmp:
        for subject in subjects:
            sub = f"sub-{subject:02d}"
            brain = rng.random(FMRI_GRID) < 0.7
            ijk = np.argwhere(brain)
            n_vox = len(ijk)
            mask_path = Path(tmp) / f"{sub}_mask.nii.gz"
            nib.save(nib.Nifti1Image(brain.astype(np.uint8), affine), mask_path)
            mz.writestr(f"{sub}_space-T1w_brainmask.nii.gz", mask_path.read_bytes())
            rows = []
            for session in range(1, FMRI_SESSIONS + 1):
                train = FMRI_TRAIN[(session - 1) * 12 : session * 12]
                trial = [("train", n) for n in train] + [("test", n) for n in FMRI_TEST]
                for k in rng.permutation(len(trial)):
                    rows.append((trial[k][0], session, 1 + len(rows) % 2, trial[k][1]))
            stim = pd.DataFrame({
                "trial_type": [r[0] for r in rows], "session": [r[1] for r in rows],
                "run": [r[2] for r in rows], "subject_id": subject,
                "trial_id": np.arange(len(rows)), "stimulus": [r[3] for r in rows],
                "concept": [r[3].rsplit("_", 1)[0] for r in rows],
            })
            patterns = {n: rng.normal(size=n_vox) for n in FMRI_TRAIN + FMRI_TEST}
            session_shift = rng.normal(size=(FMRI_SESSIONS, n_vox))
            values = np.stack([patterns[r[3]] + 0.5 * rng.normal(size=n_vox)
                               + session_shift[r[1] - 1] for r in rows], axis=1)
            voxels = pd.DataFrame({
                "voxel_id": np.arange(n_vox), "subject_id": subject,
                "voxel_x": ijk[:, 0], "voxel_y": ijk[:, 1], "voxel_z": ijk[:, 2],
                "nc_singletrial": rng.uniform(0, 30, n_vox),
                "nc_testset": rng.uniform(0, 80, n_vox),
                "splithalf_uncorrected": rng.uniform(-0.1, 0.5, n_vox),
                "splithalf_corrected": rng.uniform(-0.1, 0.7, n_vox),
                "prf-eccentricity": rng.uniform(0, 10, n_vox),
                "prf-polarangle": rng.uniform(0, 360, n_vox),
                "prf-rsquared": rng.uniform(0, 1, n_vox),
                "prf-size": rng.uniform(0, 5, n_vox),
            })
            for roi in FMRI_ROIS:
                voxels[roi] = (rng.random(n_vox) < 0.15).astype(int)
            voxels.loc[: n_vox // 4, FMRI_ROIS] = 0  # some voxels in no ROI
            h5 = Path(tmp) / f"{sub}_ResponseData.h5"
            write_pandas_frame(h5, "ResponseData", voxels["voxel_id"].to_numpy(), values)
            bz.writestr(f"betas_csv/{sub}_ResponseData.h5", h5.read_bytes())
            bz.writestr(f"betas_csv/{sub}_StimulusMetadata.csv", stim.to_csv(index=False))
            bz.writestr(f"betas_csv/{sub}_VoxelMetadata.csv", voxels.to_csv(index=False))
            if subject == subjects[0]:  # a large member the first subject's fetch must skip
                bz.writestr(zipfile.ZipInfo("betas_csv/sub-03_ResponseData.h5"),
                            rng.bytes(4 << 20))
            truth[subject] = {"brain": brain, "stimuli": stim, "voxels": voxels,
                              "values": values}
    (figshare / "ndownloader" / "files").mkdir(parents=True, exist_ok=True)
    (figshare / FIGSHARE_BETAS).write_bytes(betas_zip.getvalue())
    (figshare / FIGSHARE_MASKS).write_bytes(masks_zip.getvalue())
    openneuro.mkdir(parents=True, exist_ok=True)
    (openneuro / "dataset_description.json").write_text(json.dumps(
        {"Name": "THINGS-fMRI", "BIDSVersion": "1.6.0", "License": "CC0"}))
    for subject in subjects:
        func = openneuro / f"sub-{subject:02d}" / "ses-things01" / "func"
        func.mkdir(parents=True)
        stim = truth[subject]["stimuli"]
        first = stim[stim["session"] == 1]
        pd.DataFrame({"onset": np.arange(len(first)) * 4.5, "duration": 0.5,
                      "trial_type": first["trial_type"].str.replace("train", "exp"),
                      "file_path": first["concept"] + "/" + first["stimulus"]}).to_csv(
            func / f"sub-{subject:02d}_ses-things01_task-things_run-01_events.tsv",
            sep="\t", index=False)
    save_datalad_dataset(openneuro, "THINGS-fMRI stand-in")
    return truth


def figshare_listing(api_root: Path, article: int, files: dict[str, str]) -> None:
    """Figshare's ``GET /v2/articles/<id>/files`` answer, for :class:`RangeServer`."""
    write_api_listing(api_root, f"v2/articles/{article}/files", [
        {"id": k, "name": name, "download_url": url, "size": 0, "is_link_only": False}
        for k, (name, url) in enumerate(files.items())])


EEG2_CHANNELS = ["Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3",
                 "POz", "PO4", "PO8", "P6", "P2"]
EEG2_TIMES = np.round(np.arange(-0.2, 0.1, 0.01), 2)  # real: -0.2 to 0.79 s (100 points)
EEG2_TRAIN = THINGS[1::12][:30]  # real: 16,540 images, 4 repeats
EEG2_TEST = THINGS[7::40][:6]  # real: 200 images, 80 repeats
EEG2_REPEATS = {"train": 4, "test": 8}


def _npy_of(obj) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(obj, dtype=object), allow_pickle=True)
    return buffer.getvalue()


def make_things_eeg2(root: Path, subjects=(1, 2)) -> dict:
    """The OSF layout of THINGS-EEG2: the image set (``image_metadata.npy``,
    ``training_images.zip``, ``test_images.zip`` with ``<split>_images/<NNNNN_concept>/
    <file>``) and one ``sub-XX.zip`` per subject holding ``sub-XX/preprocessed_eeg_
    {training,test}.npy``, each a pickled dict (``preprocessed_eeg_data`` of shape
    images x repetitions x channels x times, ``ch_names``, ``times``), as the authors'
    preprocessing script saves them."""
    rng = np.random.default_rng(7)
    truth = {"metadata": {}, "jpeg": {}}
    (root / "image_set").mkdir(parents=True)
    (root / "anp5v").mkdir()
    for split, images, folder in (("train", EEG2_TRAIN, "training"), ("test", EEG2_TEST,
                                                                       "test")):
        concepts = [f"{k + 1:05d}_{n.rsplit('_', 1)[0]}" for k, n in enumerate(images)]
        truth["metadata"][f"{split}_img_files"] = list(images)
        truth["metadata"][f"{split}_img_concepts"] = concepts
        truth["metadata"][f"{split}_img_concepts_THINGS"] = [
            f"{k * 7 + 1}_{c.split('_', 1)[1]}" for k, c in enumerate(concepts)]
        with zipfile.ZipFile(root / "image_set" / f"{folder}_images.zip", "w") as zf:
            for concept, name in zip(concepts, images):
                data = tiny_jpeg(rng)
                zf.writestr(f"{folder}_images/{concept}/{name}", data)
                truth["jpeg"][name] = data
    (root / "image_set" / "image_metadata.npy").write_bytes(_npy_of(truth["metadata"]))
    n_ch, n_t = len(EEG2_CHANNELS), len(EEG2_TIMES)
    patterns = {n: rng.normal(size=(n_ch, n_t)) for n in EEG2_TRAIN + EEG2_TEST}
    for subject in subjects:
        sub = f"sub-{subject:02d}"
        with zipfile.ZipFile(root / "anp5v" / f"{sub}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for split, images, folder in (("train", EEG2_TRAIN, "training"),
                                          ("test", EEG2_TEST, "test")):
                reps = EEG2_REPEATS[split]
                data = np.stack([[patterns[n] + 0.5 * rng.normal(size=(n_ch, n_t))
                                  for _ in range(reps)] for n in images])
                zf.writestr(f"{sub}/preprocessed_eeg_{folder}.npy", _npy_of(
                    {"preprocessed_eeg_data": data, "ch_names": EEG2_CHANNELS,
                     "times": EEG2_TIMES}))
                truth[(subject, split)] = data
    return truth


def osf_listing(api_root: Path, node: str, files: dict[str, str]) -> None:
    """OSF's ``GET /v2/nodes/<node>/files/osfstorage/`` answer, for :class:`RangeServer`."""
    write_api_listing(api_root, f"v2/nodes/{node}/files/osfstorage", {
        "data": [{"id": f"id{k}", "type": "files",
                  "attributes": {"name": name, "kind": "file", "size": 0},
                  "links": {"download": url}} for k, (name, url) in enumerate(files.items())],
        "links": {"next": None},
    })
