"""The documentation of :func:`make_retinotopic_dataset`: the generative model, section by
section, and what it returns (filled into its docstring by :func:`afo_encoding._docs.fill_doc`)."""

DOCS = {
    "images": """
    **Images.** Each image holds one object of a category in :data:`CATEGORIES` (disc,
    square, triangle, cross, star, ring) at a random position (centre uniform in
    [-0.6, 0.6]^2 grid units), radius (0.2-0.45 of the image half-width), orientation,
    luminance step (0.15-0.4, either polarity), colour and fill texture (a grating of
    random orientation and wavelength), on a naturalistic background: 1/f^alpha noise
    (alpha 0.9-1.3) whose local contrast varies smoothly across the image
    (``exp(0.7 G)``, ``G`` a Gaussian field low-passed at 1.5 cycles per image), with
    random mean luminance, contrast and colour tint. RGB uint8.""",
    "anatomy": """
    **Anatomy.** Voxels lie in the occipital gray matter of the ICBM 2009a MNI152
    template bundled with nilearn (gray-matter probability > 0.5, y <= -60 mm, above a
    plane standing for the tentorium, z <= 40 mm), on a regular grid whose spacing is
    chosen so that ``n_voxels`` fill the occipital lobe (about 2.8 mm for 5000 voxels,
    3.7 mm for 2000); the most anterior extra voxels are dropped. Each hemisphere is cut
    into three areas (:data:`AREAS`) by the distance ``d`` from its occipital pole (the
    centre of its 2 % most posterior voxels; lateral and vertical offsets count half):
    early, the nearest 40 % of its voxels, then mid (35 %) and late (25 %), so the
    hierarchy runs posterior to anterior.""",
    "retinotopy": """
    **Retinotopy** (grid_sample convention: x to the right, y downward, both in
    [-1, 1]). Each area holds a complete map of the contralateral hemifield (the left
    hemisphere, x < 0, sees the right visual field), as V1, V2 and V3 each do.
    Eccentricity grows with ``d`` across the area (mostly anteriorly),
    ``ecc = 0.9 (exp(1.5 t) - 1) / (exp(1.5) - 1)`` with ``t`` the area-relative ``d`` in
    [0, 1] (cortical magnification: more cortex for the fovea).
    Polar angle follows the elevation ``e`` of the voxel seen from the pole,
    ``theta = pi/2 tanh(1.2 (e - median) / q80(|e - median|))``: dorsal voxels see the
    lower field (y > 0), ventral voxels the upper field. The maps restart at area
    borders (a simplification of the mirror reversals of real borders). pRF size
    (Gaussian sd, grid units) grows with eccentricity and along the hierarchy: early
    0.05 + 0.12 ecc, mid 0.10 + 0.30 ecc, late 0.35 + 0.60 ecc.""",
    "features": """
    **Features.** Luminance is filtered by quadrature Gabor filters (4 orientations,
    one-octave bandwidth) at three wavelengths, ``image_size / 16, / 8, / 4`` pixels
    (fine, middle, coarse); local energy is sampled at the cell centres of 32x32, 16x16
    and 8x8 grids over the image. A voxel's features are Gaussian-pRF-weighted means of
    these maps, raised to the power 0.5 (compressive spatial summation) and z-scored
    over images:

    - early (``"oriented_energy"``): fine-scale energy in 4 orientations; weights
      ``1 + 0.6 cos 2(theta_o - phi)`` with a preferred orientation ``phi`` near the
      polar angle of the pRF (radial bias);
    - mid (``"texture"``): middle-scale energy in 4 orientations plus 2 co-occurrence
      statistics (pooled geometric mean of orthogonal energies), random signed weights;
    - late (``"shape_category"``): coarse-scale energy in 4 orientations over the large
      pRF (global shape, nearly position invariant) plus the object category (one-hot),
      whose weights come from smooth category patches (12 mm) mirrored across
      hemispheres; the two parts share the variance (30-70 %).

    The noiseless ``signal`` of a voxel is its features times its weights, z-scored
    over the images (sd exactly 1 in this sample). The three scales are the first three
    layers of ``get_backbone("pyramid", image_size=image_size)`` (wavelength 4 pixels at
    pyramid level ``s``); a pyramid built for another input size sees them between its
    layers. Below 64 pixels, the finest scale nears the Nyquist limit.""",
    "hierarchy": """
    **Hierarchy** (``hierarchy=h > 0``; 0 by default). Higher areas also inherit the
    features of the area below, as V4 receives from V1 and V2: every mid voxel also reads
    fine-scale oriented energy (early type, with its own orientation weights) and every
    late voxel middle-scale texture (mid type, its own random weights), pooled over the
    voxel's own pRF. Its signal is ``sqrt(1 - h) own + sqrt(h) inherited`` (both
    z-scored), z-scored again: ``h`` is the inherited share of the variance when the two
    parts are uncorrelated (energies at neighbouring scales correlate, so less is new).
    Areas then share features that one of them reads weakly, the setting of the
    All-for-One recipe's stage 2 (:class:`~afo_encoding.encoders.afo.AllForOneEncoder`).
    Images, early voxels, noise and ``features``/``weights`` (the own part) do not change
    with ``h``.""",
    "variants": """
    **Variants** (keyword options; their defaults give the brain above). Each changes
    what a fitted model has to find, to check that an encoder works beyond this one brain:

    - ``feature_model="contrast"``: voxels read contrast energy instead of Gabor energy. At
      each scale the luminance is filtered by a difference of Gaussians (isotropic,
      surround sd twice the centre's) peaking at the Gabor frequency of that scale; the
      squared positive and negative parts (ON and OFF energies) are divided by
      ``0.02^2`` plus the local energy (the squared response blurred over one wavelength:
      divisive normalisation) and averaged over the cells of the pooling grids. Early and
      mid voxels weight ON and OFF with log-normal weights ``exp(0.5 N(0, 1))``; late voxels
      as above, with the two energies in place of the four orientations. No channel of the
      ``"pyramid"`` backbone computes these features. ``feature_type`` becomes
      ``"contrast_energy"`` (early, mid) and ``"contrast_category"`` (late).
    - ``retinotopy="mirrored"``: every map mirrored left-right (x -> -x), so each
      hemisphere sees its own side of the field; ``retinotopy=f``, a callable
      ``f(prf_center, xyz)`` that returns new centres (n_voxels, 2) inside [-1, 1]^2 from
      the contralateral ones and the voxel positions (MNI mm).
    - ``map_rotation=a``: the map (after ``retinotopy``) turned by ``a`` degrees
      counter-clockwise on the screen about the fovea (the polar angle ``arctan2(-y, x)``
      grows by ``a``). With any of these, pRF sizes follow the eccentricity of the final
      centres.
    - ``anatomy="folded"``: voxels lie on a folded cortical sheet instead of the gray
      matter, one voxel thick, at ``|x| = 30 + f(y, z)`` mm with ``f(y, z) = 10 sin(2 pi
      (y + 106) / 16) + 10 sin(2 pi (z + 16) / 16)``, y in [-106, -62] and z in [-16, 32]
      mm: folds 20 mm deep every 16 mm in both directions, like sulci, resolved from a
      few hundred voxels on (spacing 8.7 mm for 300, 3 mm for 2000). The maps are laid out
      along the sheet: ``d`` is the arclength along y from the posterior edge and the
      elevation the arclength along z (both in ``sources.sheet_coords``, mm), so voxels
      that face each other across a fold, a few mm apart, can be far apart on the maps.""",
    "noise": """
    **Noise (fMRI).** Single trials are ``ncsnr * signal + N(0, 1)``, independent over
    voxels and trials, so the planted noise-ceiling SNR of a voxel is ``ncsnr``:
    ``snr * gain * exp(0.35 N(0, 1))`` with area gains early 1.0, mid 0.8, late 0.6, and
    10 % of the voxels nearly dead (ncsnr scaled by U(0, 0.1)). ``Y`` is the mean of the
    ``n_repeats`` trials, whose noise ceiling is, in NSD units,
    ``100 ncsnr^2 / (ncsnr^2 + 1 / n_repeats)`` percent, and in units of Pearson r the
    square root of that fraction.""",
    "sensors": """
    **EEG/MEG.** Every voxel is a current dipole, oriented between the radial direction
    and a random one, whose activity for an image is ``2 + signal`` (an evoked response
    common to all images plus the image-specific part) times the time course of its
    area: a gamma function (order 3) with onsets 40/75/110 ms and peaks at 100 ms
    (early), 150 ms (mid) and 200 ms (late), sampled at 100 Hz from 0 to 490 ms.
    Positions go from MNI to MNE's head frame through the fsaverage transform bundled
    with MNE. EEG: potential of a dipole in an infinite homogeneous medium (0.33 S/m)
    on the 90 distinct electrodes of the ``standard_1020`` montage, average reference.
    MEG: radial magnetometers at the 102 positions of the bundled ``Vectorview-mag``
    layout projected onto a 12 cm sphere around (0, 0, 4 cm), field of a dipole in a
    spherical conductor (Sarvas 1987; radial dipoles are silent). Data are scaled so
    that the largest mean evoked value is 5 uV (EEG) or 200 fT (MEG). Noise: 40 random
    gray-matter dipoles plus white sensor noise (equal variance), smoothed in time
    (Gaussian, 10 ms), scaled so that the root mean square over columns of the signal
    sd over images is ``snr`` times that of the noise sd. A column is a (channel, time)
    pair, channel-major; its ground truth is a summary over the sources that reach it:
    ``rois`` the area contributing most signal variance, ``prf_center``/``prf_size``
    the variance-weighted mean over sources (a sensor's population receptive field).
    The per-source truth is in ``sources``.""",
    "parameters": """
    Parameters
    ----------
    n_images : int
        Number of images (>= 10).
    image_size : int
        Height and width of the square images, in pixels (>= 32).
    modality : {"fmri", "eeg", "meg"}
        The recording: a 4D Niimg, or ``mne.EpochsArray`` for EEG and MEG.
    n_voxels : int
        Number of cortical voxels (fMRI columns; the dipoles of EEG/MEG), at least 30;
        the grid gets finer as it grows (0.4 mm holds over a million).
    n_repeats : int
        Single trials per image (>= 1).
    snr : float
        Overall signal-to-noise ratio (> 0). fMRI: the median ncsnr of early voxels
        (other areas and dead voxels lower, see Noise); EEG/MEG: the ratio of the RMS
        signal sd to the RMS noise sd over columns.
    hierarchy : float
        Share in [0, 1) of a mid or late voxel's signal inherited from the area below (see
        Hierarchy); 0, the default, keeps the areas' features apart.
    feature_model : {"gabor", "contrast"}
        What the voxels read: Gabor energy (the default, see Features) or normalised
        contrast energy of centre-surround filters (see Variants).
    retinotopy : {"contralateral", "mirrored"} or callable
        The map of the visual field: contralateral (the default, see Retinotopy), mirrored
        left-right, or ``f(prf_center, xyz) -> prf_center`` (see Variants).
    map_rotation : float
        Degrees by which the map is turned counter-clockwise about the fovea (0: none).
    anatomy : {"occipital", "folded"}
        Where the voxels lie: the occipital gray matter (the default, see Anatomy) or a
        folded cortical sheet (see Variants).
    return_features : bool
        Also return ``features`` (n_images, n_voxels, 10) and ``weights`` (n_voxels, 10),
        the exact linear model behind ``signal`` (memory: 40 bytes per image and voxel).
    random_state : int | RandomState | Generator | None
        Seed. The images depend only on it, ``n_images`` and ``image_size``; the same
        arguments give identical outputs.
    verbose : bool | int | str | None
        Log the steps and their durations (INFO).""",
    "returns": """
    Returns
    -------
    data : sklearn.utils.Bunch
        - ``images``: uint8 (n_images, image_size, image_size, 3).
        - ``responses``: 4D ``Nifti1Image`` (fMRI, one volume per image, zero outside
          ``mask``) or ``mne.EpochsArray`` (EEG/MEG, one epoch per image, with montage /
          sensor positions and ``metadata`` on the objects). Holds the same data as
          ``Y``: ``as_responses(responses, mask=mask)`` gives ``Y`` and ``coords``.
        - ``mask``: 3D ``Nifti1Image`` of the voxels (fMRI), else None.
        - ``Y``: float32 (n_images, n_columns), mean of the repeats. n_columns is
          ``n_voxels`` (fMRI) or n_channels x n_times.
        - ``coords``: float64 (n_columns, 3) MNI mm, or (n_columns, 4) sensor position
          in metres (head frame) and time in seconds.
        - ``repeats``: float32 (n_images, n_repeats, n_columns), the single trials.
        - ``signal``: float32 (n_images, n_columns), the noiseless response.
        - ``ncsnr``: (n_columns,) planted signal sd / noise sd of a single trial.
        - ``noise_ceiling``: (n_columns,) largest expected Pearson r of a model against
          ``Y`` (r units, directly comparable with ``score``).
        - ``noise_ceiling_percent``: (n_columns,) NSD noise ceiling of ``Y`` in percent
          of variance (:func:`afo_encoding.metrics.noise_ceiling`).
        - ``prf_center``: (n_columns, 2) grid_sample convention; ``prf_size``:
          (n_columns,) Gaussian sd in grid units.
        - ``rois``: str (n_columns,) in :data:`AREAS`; ``feature_type``: str
          (n_columns,) in :data:`FEATURE_TYPES` values (default feature model).
        - ``sources``: Bunch of the cortical voxels (``coords`` MNI mm, ``prf_center``,
          ``prf_size``, ``rois``, ``feature_type``, ``ncsnr`` (fMRI) or ``signal``
          (EEG/MEG), ``sheet_coords`` (``anatomy="folded"``)); the same voxels as the
          columns for fMRI.
        - ``energy_map``: float32 (n_images, 32, 32), fine-scale Gabor energy summed
          over orientations (``feature_model="contrast"``: the ON and OFF energies) on the
          early pooling grid (rows y): the low-level layout of each image, what early
          voxels read.
        - ``object_category`` int (n_images,) into ``category_names``;
          ``object_position`` (n_images, 2) grid convention; ``object_size`` radius in
          grid units; ``object_orientation`` radians.
        - ``times``, ``ch_names``, ``time_courses`` (3, n_times) (EEG/MEG only).
        - ``features``, ``weights`` (with ``return_features``): ``signal`` is
          ``features @ weights`` per voxel, z-scored over images (with ``hierarchy``, the
          own part of it).
        - ``modality``, ``area_names``, ``category_names``, ``voxel_size`` (mm),
          ``description``.""",
}
