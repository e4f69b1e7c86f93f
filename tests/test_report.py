"""The HTML report of a fitted encoder: one self-contained page holding every section."""

import base64
from html.parser import HTMLParser

import numpy as np
import pytest
from nilearn.image import index_img

from afo_encoding import LinearProbeEncoder, TopyEncoder
from afo_encoding.report import SECTIONS, EncoderReport, generate_report
from afo_encoding.simulation import make_retinotopic_dataset

PNG = b"\x89PNG\r\n\x1a\n"


class PageStructure(HTMLParser):
    """Sections, images, links and external resources of a page."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.links, self.external = [], [], [], []
        self.tags = []
        self._section = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self._section = attrs["id"]
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append((self._section, attrs["src"], attrs.get("alt")))
        if tag == "a":
            self.links.append(attrs["href"])
        for key in ("src", "href"):
            value = attrs.get(key, "")
            if value.startswith(("http:", "https:", "//", "file:")):
                self.external.append(value)


def parse(page):
    parser = PageStructure()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def fmri():
    data = make_retinotopic_dataset(n_images=80, n_voxels=60, image_size=32, random_state=0)
    return data, index_img(data.responses, range(60)), index_img(data.responses, range(60, 80))


def check_self_contained(page):
    structure = parse(page)
    assert structure.sections == [key for key, _ in SECTIONS]  # every section, in order
    # the navigation bar links to every section
    assert structure.links == [f"#{key}" for key, _ in SECTIONS]
    # figures are embedded PNGs; nothing is fetched from elsewhere
    assert not structure.external
    assert "script" not in structure.tags
    assert "link" not in structure.tags
    for _, src, alt in structure.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
        assert alt
    return structure


def test_report_of_a_linear_probe_holds_every_section(fmri, tmp_path):
    data, train, test = fmri
    probe = LinearProbeEncoder(backbone_params={"image_size": 32, "n_scales": 2},
                               mask=data.mask).fit(data.images[:60], train)
    report = generate_report(probe, data.images[60:], test, rois=data.rois,
                             noise_ceiling=data.noise_ceiling,
                             roi_order=["early", "mid", "late"],
                             output_file=tmp_path / "report.html")
    assert isinstance(report, EncoderReport)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page == report.get_html() == report._repr_html_()
    structure = check_self_contained(page)
    with_figures = {section for section, _, _ in structure.images}
    assert {"scores", "score-map"} <= with_figures
    # what a linear probe did not learn is said, not drawn
    assert "has no retina map" in report.sections["retina-map"]
    assert "has no LayerSelector" in report.sections["layer-selector"]
    assert "has no training history" in report.sections["history"]
    # the score table: one row per ROI in the order given, then all, with the ceiling
    scores = report.sections["scores"]
    assert scores.index("<td>early</td>") < scores.index("<td>mid</td>") < \
        scores.index("<td>late</td>") < scores.index("<td>all</td>")
    assert "noise ceiling" in scores
    assert "<td>alphas</td>" in report.sections["parameters"]
    assert "60 of 60" in report.sections["data"]
    assert repr(report).startswith("<EncoderReport 'LinearProbeEncoder report': summary,")


def test_report_without_test_data_maps_the_validation_scores(fmri):
    data, train, _ = fmri
    probe = LinearProbeEncoder(backbone_params={"image_size": 32, "n_scales": 2},
                               mask=data.mask).fit(data.images[:60], train)
    report = generate_report(probe)
    check_self_contained(report.get_html())
    assert "validation Pearson r on the brain" in report.sections["score-map"]
    assert "Give X_test and y_test" in report.sections["scores"]
    with pytest.raises(ValueError, match="Give both X_test and y_test"):
        generate_report(probe, data.images[60:])


@pytest.mark.slow
def test_report_of_a_topy_encoder_with_the_linear_probe(fmri, tmp_path):
    data, train, test = fmri
    params = {"backbone_params": {"image_size": 32, "n_scales": 2}, "mask": data.mask}
    encoder = TopyEncoder(**params, d_model=8, max_epochs=2, top_k=1, device="cpu",
                          random_state=0).fit(data.images[:60], train)
    probe = LinearProbeEncoder(**params).fit(data.images[:60], train)
    report = encoder.generate_report(data.images[60:], test, baseline=probe, rois=data.rois,
                                     noise_ceiling=data.noise_ceiling)
    structure = check_self_contained(report.get_html())
    # every figure section holds its figure
    with_figures = {section for section, _, _ in structure.images}
    assert with_figures == {"scores", "retina-map", "layer-selector", "score-map", "history"}
    assert "LinearProbeEncoder r" in report.sections["scores"]
    path = report.save_as_html(tmp_path / "topy.html")
    assert path.read_text(encoding="utf-8") == report.get_html()
    assert np.isfinite(encoder.history_["val_score"]).all()
