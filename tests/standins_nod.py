"""A local stand-in of the Natural Object Dataset (OpenNeuro ds004496, a DataLad dataset):
ciftify's beta maps (CIFTI dscalar on the 32k fsLR cortex, map names and ``_label.txt``
written as the authors' GLM.py writes them), BIDS events, fsLR meshes (GIFTI), floc ROIs
(CIFTI dlabel) and ImageNet stimuli; plus the authors' HCP-MMP support files and a stand-in
of COCO's image server. Few vertices, few trials, made-up values with a planted signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import savemat
from standins import save_datalad_dataset, tiny_jpeg

N_VERTICES = 30  # per hemisphere (real: 32,492)
MEDIAL_WALL = 4  # vertices per hemisphere outside the cortex (real: about 2,800)
IMAGENET_PER_RUN = 5  # real: 100
COCO_IMAGES = [f"{k:012d}.jpg" for k in (7665, 10948, 12179, 14103, 20106, 23047)]  # real: 120
MMP_AREAS = ["V1", "MST", "V6", "V2", "V3", "V4", "V8", "4", "3b", "FEF"]
VISUAL_AREAS = ["V1", "V2", "V3", "V4", "V6", "V8", "MST"]
STANDIN_SUBJECTS = {1: 2, 10: 1}  # subject: ImageNet sessions in the stand-in (real: 4, 1)
COCO_RUNS_STANDIN = 10
FLOC_NAMES = {"bodies": "EBA", "faces": "FFA", "places": "PPA", "words": "VWFA"}


def _mesh(rng: np.random.Generator):
    from scipy.spatial import ConvexHull

    points = rng.normal(size=(N_VERTICES, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return 50 * points, ConvexHull(points).simplices.astype(np.int32)


def _write_gifti(path: Path, points: np.ndarray, faces: np.ndarray) -> None:
    import nibabel as nib
    from nibabel.gifti import GiftiDataArray, GiftiImage

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(GiftiImage(darrays=[
        GiftiDataArray(points.astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
        GiftiDataArray(faces, intent="NIFTI_INTENT_TRIANGLE")]), path)


def _cortex_axis():
    from nibabel import cifti2

    mask = np.ones(N_VERTICES, dtype=bool)
    mask[:MEDIAL_WALL] = False
    return (cifti2.BrainModelAxis.from_mask(mask, name="CortexLeft")
            + cifti2.BrainModelAxis.from_mask(mask, name="CortexRight"))


N_CORTEX = 2 * (N_VERTICES - MEDIAL_WALL)


def _write_dscalar(path: Path, data: np.ndarray, names: list[str]) -> None:
    from nibabel import cifti2

    path.parent.mkdir(parents=True, exist_ok=True)
    cifti2.Cifti2Image(data.astype(np.float32),
                       header=(cifti2.ScalarAxis(names), _cortex_axis())).to_filename(path)


def _write_dlabel(path: Path, values: np.ndarray, names: dict[int, str]) -> None:
    from nibabel import cifti2

    table = {0: ("???", (0.0, 0.0, 0.0, 0.0)),
             **{k: (n, (1.0, 0.0, 0.0, 1.0)) for k, n in names.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    cifti2.Cifti2Image(values[None, :].astype(np.float32),
                       header=(cifti2.LabelAxis([path.stem], [table]), _cortex_axis())
                       ).to_filename(path)


def make_nod_code(root: Path) -> np.ndarray:
    """validation/supportfiles of the authors' NOD-fmri repository: the HCP-MMP atlas on
    the cortical grayordinates (left areas numbered 181-360 as in the real file), its
    area names (a junk header, then ``L_<area>_ROI,R_<area>_ROI`` per row) and the visual
    areas (``ID_in_22Region,area_name``, no region id for non-visual areas)."""
    rng = np.random.default_rng(8)
    n = len(MMP_AREAS)
    half = N_CORTEX // 2
    atlas = np.concatenate([180 + rng.integers(1, n + 1, half), rng.integers(1, n + 1, half)])
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "MMP_mpmLR32k.mat", {"glasser_MMP": atlas[None, :].astype(np.float64)})
    (root / "roilbl_mmp.csv").write_text(
        "???,???\n" + "".join(f"L_{a}_ROI,R_{a}_ROI\n" for a in MMP_AREAS))
    (root / "HCP-MMP1_visual-cortex1.csv").write_text(
        "ID_in_22Region,area_name\n" + "".join(
            f"{k + 1 if a in VISUAL_AREAS else ''},{a}\n" for k, a in enumerate(MMP_AREAS)))
    return atlas


def make_coco_server(root: Path) -> dict:
    """COCO's image folders: the first images in train2017, the others in val2017."""
    rng = np.random.default_rng(9)
    jpeg = {}
    for k, name in enumerate(COCO_IMAGES):
        folder = root / ("train2017" if k < 4 else "val2017")
        folder.mkdir(parents=True, exist_ok=True)
        jpeg[name] = tiny_jpeg(rng)
        (folder / name).write_bytes(jpeg[name])
    return jpeg


def make_nod(root: Path) -> dict:
    rng = np.random.default_rng(10)
    points, faces = _mesh(rng)
    wnids = [f"n{1440764 + k:08d}" for k in range(40)]
    truth = {"patterns": {}, "runs": {}, "jpeg": {}}

    def pattern(name):
        if name not in truth["patterns"]:
            truth["patterns"][name] = rng.normal(size=N_CORTEX)
        return truth["patterns"][name]

    for subject, n_sessions in STANDIN_SUBJECTS.items():
        sub = f"sub-{subject:02d}"
        for hemi, shift in (("L", -60.0), ("R", 60.0)):
            for mesh in ("inflated", "midthickness"):
                moved = points + np.array([shift, 0, 0]) * (mesh == "midthickness")
                _write_gifti(root / f"derivatives/ciftify/{sub}/standard_fsLR_surface/"
                             f"{sub}.{hemi}.{mesh}.32k_fs_LR.surf.gii", moved, faces)
        runs = [(f"imagenet{s:02d}", r) for s in range(1, n_sessions + 1) for r in range(1, 11)]
        if subject <= 9:
            runs += [("coco", r) for r in range(1, COCO_RUNS_STANDIN + 1)]
        for session, run in runs:
            task = "coco" if session == "coco" else "imagenet"
            name = f"ses-{session}_task-{task}_run-{run}"
            func = root / sub / f"ses-{session}" / "func"
            func.mkdir(parents=True, exist_ok=True)
            if task == "imagenet":
                files = []
                for _ in range(IMAGENET_PER_RUN):
                    wnid = wnids[rng.integers(len(wnids))]
                    files.append(f"{wnid}/{wnid}_{rng.integers(1, 99999)}.JPEG")
                images = [f.rsplit("/", 1)[1] for f in files]
                events = pd.DataFrame({
                    "onset": np.arange(len(files)) * 4.0, "duration": 1.0,
                    "trial_type": [float(wnids.index(f.split("/")[0]) + 1) for f in files],
                    "response": -1.0, "response_time": 1.2,
                    "stim_file": [f"imagenet/{f}" for f in files]})
                map_names, label = images, "".join(images)
                for f in files:
                    target = root / "stimuli" / "imagenet" / f
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        truth["jpeg"][f.rsplit("/", 1)[1]] = tiny_jpeg(rng)
                        target.write_bytes(truth["jpeg"][f.rsplit("/", 1)[1]])
            else:
                order = rng.permutation(len(COCO_IMAGES))
                trial_type = [float(k + 1) for k in order] + [1000.0, 2000.0]
                condition = [f"coco/{COCO_IMAGES[k]}" for k in order] + ["n/a", "n/a"]
                events = pd.DataFrame({"onset": np.arange(len(trial_type)) * 3.0,
                                       "duration": 0.5, "trial_type": trial_type,
                                       "response": 0.0, "response_time": 0.0,
                                       "condition": condition})
                # one map per image number, sorted (GLM.py: stim_names = sorted(label_sub))
                images = list(COCO_IMAGES)
                map_names = [f"{k + 1:.1f}" for k in range(len(COCO_IMAGES))]
                label = "".join(map_names)
            events.to_csv(func / f"{sub}_ses-{session}_task-{task}_run-{run:02d}_events.tsv",
                          sep="\t", index=False, na_rep="n/a")
            data = np.stack([pattern(n) + 0.5 * rng.normal(size=N_CORTEX) for n in images])
            data += rng.normal(size=N_CORTEX)  # a run offset, removed by the z-scoring
            base = root / f"derivatives/ciftify/{sub}/results/{name}/{name}"
            _write_dscalar(Path(f"{base}_beta.dscalar.nii"), data, map_names)
            Path(f"{base}_label.txt").write_text(label)
            truth["runs"][(subject, session, run)] = (images, data)
        if subject <= 9:
            for k, kind in enumerate(("bodies", "faces", "places", "words")):
                values = np.zeros(N_CORTEX)
                values[k * 5 : k * 5 + 4] = 1
                _write_dlabel(root / f"derivatives/ciftify/{sub}/results/ses-floc_task-floc/"
                              f"floc-{kind}.dlabel.nii", values, {1: FLOC_NAMES[kind]})
    coco = root / "stimuli" / "coco"
    coco.mkdir(parents=True)
    pd.DataFrame({"num": range(len(COCO_IMAGES)), "img": COCO_IMAGES}).to_csv(
        coco / "coco_images.csv", index=False)
    (root / "README").write_text("Natural Object Dataset (stand-in)\n")
    save_datalad_dataset(root, "NOD stand-in")
    truth["points"] = points
    return truth
