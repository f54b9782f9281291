import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import arvis
from arvis.cli import main
from arvis.sample import collect_npz, read_protocol, sample_to_folder


def _read_images(folder, count):
    return np.stack([np.asarray(Image.open(folder / "images" / f"{index:06d}.png")) for index in range(count)])


def _single_and_sharded(pipeline, tmp_path, *, single_batch, sharded_batch, order):
    """7 images sampled by one process, and by 2 simulated processes run in ``order``: both as uint8 arrays."""
    sample_to_folder(pipeline, tmp_path / "single", num_samples=7, seed=3, batch_size=single_batch)
    for process_index in order:
        sample_to_folder(pipeline, tmp_path / "sharded", num_samples=7, seed=3, batch_size=sharded_batch,
                         process_index=process_index, num_processes=2)
    return _read_images(tmp_path / "single", 7), _read_images(tmp_path / "sharded", 7)


def test_two_processes_write_exactly_the_images_of_one(tiny_pipeline, tmp_path):
    # Batch size 1 everywhere, so every image is computed from the same tensors: the PNGs must be identical.
    single, sharded = _single_and_sharded(tiny_pipeline, tmp_path, single_batch=1, sharded_batch=1, order=(1, 0))
    np.testing.assert_array_equal(sharded, single)
    assert len(np.unique(single.reshape(7, -1), axis=0)) == 7  # every index has its own image


def test_sharding_and_batching_keep_each_images_tokens(tiny_pipeline, tmp_path):
    # Other batch shapes draw the same tokens; the decoder's float rounding may then differ by ~1e-6,
    # which can move a pixel across a uint8 rounding boundary, so at most one level of difference.
    single, sharded = _single_and_sharded(tiny_pipeline, tmp_path, single_batch=4, sharded_batch=3, order=(0, 1))
    assert np.abs(single.astype(int) - sharded.astype(int)).max() <= 1


def test_a_process_writes_only_its_own_indices(tiny_pipeline, tmp_path):
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=7, process_index=1, num_processes=3)
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == ["000001.png", "000004.png"]


def test_samples_match_arvis_generate(tiny_pipeline, tmp_path):
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=4, seed=9, labels=[5], batch_size=4, top_k=4)
    expected = arvis.generate(tiny_pipeline, class_labels=[5], num_samples=4, seed=9, batch_size=4, top_k=4,
                              output_type="np")
    np.testing.assert_array_equal(_read_images(tmp_path, 4), expected)


def test_resume_regenerates_only_the_missing_images(tiny_pipeline, tmp_path, monkeypatch):
    # Batch size 1 in both runs, so a regenerated image is computed exactly as before.
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=6, seed=1, batch_size=1)
    first = np.load(collect_npz(tmp_path))
    first_images, first_labels = first["arr_0"], first["labels"]
    kept = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "images").iterdir()}
    for index in (1, 4):
        (tmp_path / "images" / f"{index:06d}.png").unlink()
        del kept[f"{index:06d}.png"]
    (tmp_path / "images" / ".000004.png.partial-deadbeef").write_bytes(b"\x89PNG truncated")  # a killed write
    decoded = []
    decode = tiny_pipeline.tokenizer.decode
    monkeypatch.setattr(tiny_pipeline.tokenizer, "decode", lambda tokens: decoded.append(len(tokens)) or decode(tokens))
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=6, seed=1, batch_size=1)
    assert decoded == [1, 1]  # indices 1 and 4 only
    assert {name: (tmp_path / "images" / name).stat().st_mtime_ns for name in kept} == kept
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    again = np.load(collect_npz(tmp_path))
    np.testing.assert_array_equal(again["arr_0"], first_images)
    np.testing.assert_array_equal(again["labels"], first_labels)


def test_npz_layout_and_balanced_labels(tiny_pipeline, tmp_path):
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=23, batch_size=8)
    with np.load(collect_npz(tmp_path)) as samples:
        assert sorted(samples.files) == ["arr_0", "labels"]
        images, labels = samples["arr_0"], samples["labels"]
    assert images.shape == (23, 16, 16, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [index % 10 for index in range(23)]
    np.testing.assert_array_equal(images, _read_images(tmp_path, 23))


def test_given_labels_cycle_and_are_recorded(tiny_pipeline, tmp_path):
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=5, labels=[7, 2], cfg_scale=1.5)
    protocol = read_protocol(tmp_path)
    assert protocol["labels"] == {"policy": "cycle", "values": [7, 2]}
    assert protocol["sampling"] == tiny_pipeline.sampling.replace(cfg_scale=1.5).to_dict()
    assert protocol["num_samples"] == 5 and protocol["seed"] == 0 and protocol["image_size"] == [16, 16]
    assert protocol["pipeline"] is None and protocol["arvis_version"] == arvis.__version__
    assert np.load(collect_npz(tmp_path))["labels"].tolist() == [7, 2, 7, 2, 7]


def test_other_settings_in_the_same_folder_are_refused(tiny_pipeline, tmp_path):
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=2, seed=0)
    with pytest.raises(ValueError, match=r"differing keys: \['sampling', 'seed'\]"):
        sample_to_folder(tiny_pipeline, tmp_path, num_samples=2, seed=1, top_k=2)
    with pytest.raises(ValueError, match=r"differing keys: \['labels'\]"):
        sample_to_folder(tiny_pipeline, tmp_path, num_samples=2, labels=[0])


def test_foreign_images_without_a_protocol_are_refused(tiny_pipeline, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "000000.png").write_bytes(b"")
    with pytest.raises(ValueError, match="protocol.json is missing"):
        sample_to_folder(tiny_pipeline, tmp_path, num_samples=2)


def test_collect_npz_names_missing_indices(tiny_pipeline, tmp_path):
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=9, process_index=0, num_processes=3)
    with pytest.raises(ValueError, match=r"6 of 9 samples are missing .* \(first: \[1, 2, 4, 5, 7\]\)"):
        collect_npz(tmp_path)
    with pytest.raises(FileNotFoundError, match="protocol.json"):
        collect_npz(tmp_path / "elsewhere")


@pytest.mark.parametrize("arguments, message", [
    ({"num_samples": 0}, "num_samples"), ({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed"),
    ({"process_index": 2, "num_processes": 2}, "process_index"), ({"labels": [10]}, "class ids in"),
    ({"labels": []}, "labels is empty"), ({"top_q": 0.5}, r"\['top_q'\] is not a setting of the next-token sampler"),
])
def test_bad_arguments(tiny_pipeline, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        sample_to_folder(tiny_pipeline, tmp_path, **{"num_samples": 2, **arguments})


def test_cli_samples_end_to_end(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "pipeline")
    arguments = ["sample", str(tmp_path / "pipeline"), "--num-samples", "5", "--out", str(tmp_path / "out"),
                 "--labels", "1", "3", "--batch-size", "2", "--top-k", "4", "--device", "cpu"]
    assert main(arguments) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_samples"] == 5 and summary["num_processes"] == 1
    with np.load(summary["npz"]) as samples:
        assert samples["arr_0"].shape == (5, 16, 16, 3) and samples["labels"].tolist() == [1, 3, 1, 3, 1]
    protocol = read_protocol(tmp_path / "out")
    assert protocol["pipeline"] == str((tmp_path / "pipeline").resolve()) and protocol["sampling"]["top_k"] == 4
    assert main(arguments) == 0  # a finished run resumes to a no-op
    assert main([*arguments[:-4], "--top-k", "2"]) == 2
    assert "differing keys: ['sampling']" in capsys.readouterr().err


def test_a_corrupt_protocol_is_named(tmp_path):
    (tmp_path / "protocol.json").write_text('{"seed": 0}')
    with pytest.raises(ValueError, match=r"protocol.json lacks the entries \['image_size', 'labels'"):
        collect_npz(tmp_path)


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "arvis.cli", "sample", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--num-samples" in result.stdout


def test_a_folder_sampled_by_an_earlier_version_resumes(tiny_pipeline, tmp_path):
    """A protocol written before a config field existed (here: sampling's cfg_interval) still matches."""
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=3, seed=0)
    protocol = read_protocol(tmp_path)
    del protocol["sampling"]["cfg_interval"]
    (tmp_path / "protocol.json").write_text(json.dumps(protocol))
    (tmp_path / "images" / "000002.png").unlink()
    sample_to_folder(tiny_pipeline, tmp_path, num_samples=3, seed=0)  # resumes instead of refusing
    assert (tmp_path / "images" / "000002.png").is_file()


def test_generate_and_sample_share_one_count_and_class_validator(tiny_pipeline, tmp_path):
    """The same bad value gets the same message from arvis.generate and from arvis.sample (one validator)."""
    for generate_arguments, sample_arguments in (({"class_labels": [10]}, {"labels": [10]}),
                                                 ({"class_labels": [0], "num_samples": 0}, {"num_samples": 0}),
                                                 ({"class_labels": [0], "seed": -1}, {"num_samples": 2, "seed": -1})):
        with pytest.raises(ValueError) as from_generate:
            arvis.generate(tiny_pipeline, **generate_arguments)
        with pytest.raises(ValueError) as from_sample:
            sample_to_folder(tiny_pipeline, tmp_path, **{"num_samples": 2, **sample_arguments})
        strip = lambda text: text.replace("class_labels", "labels")  # noqa: E731  the argument names differ
        assert strip(str(from_generate.value)) == strip(str(from_sample.value))
