"""A local stand-in of BOLD5000: OpenNeuro ds001499 (a DataLad dataset with the ROI masks of
derivatives/spm, their irregular names included), the release-2.0 files of Figshare
(per-session GLMsingle betas, brain masks, trial image names) and the stimuli zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from standins import save_datalad_dataset, tiny_jpeg

BOLD_GRID = (5, 6, 4)  # real: about (71, 89, 72)
BOLD_SUBJECTS = (1, 2)
BOLD_SESSIONS = (1, 2)  # betas written for these; the trial names cover every session
POOL = ([f"COCO_train2014_{k:012d}.jpg" for k in range(420700, 420720)]
        + [f"n0{1930112 + k}_{k * 37 + 5}.JPEG" for k in range(20)]
        + [f"scene{k}.jpg" for k in range(10)])
FOLDERS = {"COCO": "COCO_", "ImageNet": "n0", "Scene": "scene"}
SPM_NAMES = {1: ["LHEarlyVis", "LHLOC", "LHOPA", "LHPPA", "LHRSC", "RHEarlyVis", "RHLOC",
                 "RHOPA", "RHPPA", "RHRSC"],
             2: ["LHEarlyVis", "LHLO", "LHOPA", "LHPPA", "LHRSC", "RHEarlyVis", "RHLO",
                 "RHOPA", "RHPPA", "RHRRSC"]}


def make_bold5000(openneuro: Path, figshare: Path, stimuli: Path) -> dict:
    import nibabel as nib

    from datasets_fetchers.bold5000 import RUNS, TRIALS_PER_RUN

    rng = np.random.default_rng(11)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    truth = {"affine": affine}
    patterns = {n: rng.normal(size=BOLD_GRID) for n in POOL}
    (figshare / "files").mkdir(parents=True)
    for subject in BOLD_SUBJECTS:
        brain = np.ones(BOLD_GRID, dtype=np.uint8)
        brain[0] = 0
        nib.save(nib.Nifti1Image(brain, affine),
                 figshare / "files" / f"CSI{subject}_brainmask.nii.gz")
        n_trials = sum(RUNS[subject]) * TRIALS_PER_RUN
        names = [POOL[k] for k in rng.integers(0, len(POOL), n_trials)]
        (figshare / "files" / f"CSI{subject}_imgnames.txt").write_text("\n".join(names) + "\n")
        offsets = np.cumsum([0, *RUNS[subject]]) * TRIALS_PER_RUN
        truth[subject] = {"names": names, "brain": brain, "betas": {}, "rois": {}}
        for session in BOLD_SESSIONS:
            trials = names[offsets[session - 1] : offsets[session]]
            betas = np.stack([patterns[n] + 0.5 * rng.normal(size=BOLD_GRID) for n in trials],
                             axis=-1) + 3.0 * session
            nib.save(nib.Nifti1Image(betas.astype(np.float32), affine), figshare / "files" /
                     f"CSI{subject}_GLMbetas-TYPED-FITHRF-GLMDENOISE-RR_ses-{session:02d}.nii.gz")
            truth[subject]["betas"][session] = betas
        spm = openneuro / "derivatives" / "spm" / f"sub-CSI{subject}"
        spm.mkdir(parents=True)
        for name in SPM_NAMES[subject]:
            roi = (rng.random(BOLD_GRID) < 0.2).astype(np.uint8)
            roi[0] = 0
            nib.save(nib.Nifti1Image(roi, affine), spm / f"sub-CSI{subject}_mask-{name}.nii.gz")
            truth[subject]["rois"][name] = roi
    (openneuro / "README").write_text("BOLD5000: Brains, Objects, Landscapes Dataset\n")
    save_datalad_dataset(openneuro, "BOLD5000 stand-in")
    buffer = io.BytesIO()
    truth["jpeg"] = {}
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in POOL:
            folder = next(f for f, prefix in FOLDERS.items() if name.startswith(prefix))
            truth["jpeg"][name] = tiny_jpeg(rng)
            zf.writestr(f"BOLD5000_Stimuli/Scene_Stimuli/Presented_Stimuli/{folder}/{name}",
                        truth["jpeg"][name])
        zf.writestr("BOLD5000_Stimuli/Image_Labels/imagenet_final_labels.txt", "n01930112 x\n")
    stimuli.mkdir(parents=True, exist_ok=True)
    (stimuli / "BOLD5000_Stimuli.zip").write_bytes(buffer.getvalue())
    return truth
