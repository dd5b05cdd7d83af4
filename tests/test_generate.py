"""pcgan generate / mix / interpolate: same seed -> same bytes, newest snapshot, clean failures."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcgan import checkpoint as ckpt
from pcgan import generate as gen
from pcgan.cli import main
from pcgan.export import preview_image, read_point_ply
from pcgan.grid import MASK, XYZ, GridMeta
from pcgan.networks import Generator

TINY = dict(z_dim=16, w_dim=16, resolution=16, channels=7, channel_base=256, channel_max=32, mapping_layers=2)
META = GridMeta(resolution=16, center=(1.0, -2.0, 30.0), scale=100.0, units="mm")


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**TINY).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)          # fresh networks start with no noise; make the noise modes matter
        G.mapping.w_avg.normal_()     # and truncation
    return G


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    ckpt.save_snapshot(d / ckpt.snapshot_name(4000), tiny_generator(), META, {"model": TINY}, 4000)
    return d


@pytest.fixture(scope="module")
def G(run_dir) -> Generator:
    return ckpt.load_generator(run_dir, "cpu")[0]


def files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "Traceback" not in err[0], err
    return err[0]


# ---------------------------------------------------------------------------------------------
# Same seed, same face


@pytest.mark.parametrize("noise_mode", ["const", "random"])
def test_grids_do_not_depend_on_batch_or_order(G, noise_mode):
    seeds = [0, 1, 2, 3, 4, 5]
    a = gen.generate_grids(G, seeds, psi=0.7, noise_mode=noise_mode, batch=1)
    shuffled = [5, 3, 1, 0, 2, 4]
    b = gen.generate_grids(G, shuffled, psi=0.7, noise_mode=noise_mode, batch=4)
    assert a.shape == (6, 7, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b[[shuffled.index(s) for s in seeds]])      # bit for bit
    assert not torch.equal(a[0], a[1])                                  # seeds are different faces


def test_batched_network_gives_the_same_faces_to_float_rounding(G):
    exact = gen.generate_grids(G, range(6), psi=0.7, noise_mode="random", batch=1)
    fast = gen.generate_grids(G, range(6), psi=0.7, noise_mode="random", batch=4, per_face=False)
    torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-4)


def test_random_noise_is_seeded_and_used(G):
    const = gen.generate_grids(G, [7], noise_mode="const")
    r1 = gen.generate_grids(G, [7], noise_mode="random")
    r2 = gen.generate_grids(G, [7, 8], noise_mode="random", batch=2)[:1]
    assert torch.equal(r1, r2) and not torch.equal(r1, const)


def test_cli_files_are_byte_identical_for_any_batch_and_order(run_dir, G, tmp_path):
    common = ["--ckpt", str(run_dir), "--trunc", "0.7", "--noise-mode", "random", "--format", "ply,npy,png"]
    assert main(["generate", *common, "--seeds", "0-5", "--batch", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["generate", *common, "--seeds", "5,3,1,0,2,4", "--batch", "4", "--out", str(tmp_path / "b")]) == 0
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    assert sorted(a) == sorted(f"seed{s:06d}{x}" for s in range(6) for x in (".npy", ".png", ".ply"))
    assert a == b
    # the cloud is the masked grid in the scans' units: the checkpoint's normalisation undone
    grid = gen.generate_grids(G, [3], psi=0.7, noise_mode="random")[0].numpy()
    mask = grid[MASK][0] > 0
    expect = grid[XYZ][:, mask].T * META.scale + np.array(META.center, np.float32)
    got = read_point_ply(tmp_path / "a" / "seed000003.ply").points
    assert got.shape == (mask.sum(), 3)
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-4)


def test_run_dir_picks_newest_snapshot_by_the_progress_inside(tmp_path):
    run = tmp_path / "run"
    old, new = tiny_generator(0), tiny_generator(1)
    # names lie on purpose: the newest is the one whose file says so
    ckpt.save_snapshot(run / "network-snapshot-009000.pt", old, META, {}, 1000)
    ckpt.save_snapshot(run / "network-snapshot-000002.pt", new, META, {}, 8000)
    args = ["--seeds", "1,2", "--format", "ply"]
    assert main(["generate", "--ckpt", str(run), *args, "--out", str(tmp_path / "dir")]) == 0
    assert main(["generate", "--ckpt", str(run / "network-snapshot-000002.pt"), *args, "--out", str(tmp_path / "new")]) == 0
    assert main(["generate", "--ckpt", str(run / "network-snapshot-009000.pt"), *args, "--out", str(tmp_path / "old")]) == 0
    assert files(tmp_path / "dir") == files(tmp_path / "new") != files(tmp_path / "old")


def test_snapshot_made_on_gpu_loads_on_cpu(run_dir, tmp_path, monkeypatch):
    # A file whose tensors are tagged cuda:0, as torch.save writes them on a GPU host.
    path = tmp_path / "gpu" / ckpt.snapshot_name(4000)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        ckpt.save_snapshot(path, tiny_generator(), META, {}, 4000)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)          # without map_location it cannot load here
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    args = ["--seeds", "0-2", "--format", "ply", "--device", "cpu"]
    assert main(["generate", "--ckpt", str(path), *args, "--out", str(tmp_path / "gpu_out")]) == 0
    assert main(["generate", "--ckpt", str(run_dir), *args, "--out", str(tmp_path / "cpu_out")]) == 0
    assert files(tmp_path / "gpu_out") == files(tmp_path / "cpu_out")
    assert calls and all(c.get("weights_only") is True and torch.device(c["map_location"]) == torch.device("cpu")
                         for c in calls if "map_location" in c)
    assert any("map_location" in c for c in calls)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def _foreign_files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, other)             # a torch file, but not ours
    pickled = tmp_path / "network.pkl"
    pickled.write_bytes(pickle.dumps(Path("x"), protocol=2))                      # pickled code, like a StyleGAN2-ADA .pkl
    return {"text": text, "other": other, "pickled": pickled, "missing": tmp_path / "nope.pt"}


@pytest.mark.parametrize("kind", ["text", "other", "pickled", "missing"])
def test_foreign_or_missing_checkpoint_fails_naming_the_file(tmp_path, capsys, kind):
    path = _foreign_files(tmp_path)[kind]
    out = tmp_path / "out"
    assert main(["generate", "--ckpt", str(path), "--seeds", "0-3", "--out", str(out)]) == 2
    assert str(path) in one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("flags, words", [
    (["--trunc", "2.5"], "outside [0, 2]"),
    (["--trunc", "-0.1"], "outside [0, 2]"),
    (["--seeds", "5-2"], "backwards"),
    (["--seeds", "3,-1"], "not a number"),
    (["--cutoff", "7"], "6 style layers"),
    (["--format", "ply,xyz"], "unknown export format"),
])
def test_bad_flags_exit_2_with_one_line(run_dir, tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    argv = ["generate", "--ckpt", str(run_dir), "--seeds", "0-3", "--out", str(out)]
    for i in range(0, len(flags), 2):    # a repeated flag: argparse keeps the last one
        argv += flags[i:i + 2]
    assert main(argv) == 2
    assert words in one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_out_exits_2(run_dir, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file where the output directory should go")
    assert main(["generate", "--ckpt", str(run_dir), "--seeds", "0", "--out", str(blocker)]) == 2
    assert str(blocker) in one_line_error(capsys)
    assert main(["generate", "--ckpt", str(run_dir), "--seeds", "0", "--out", str(blocker / "sub")]) == 2
    assert "cannot create output directory" in one_line_error(capsys)
    assert blocker.read_text().startswith("a file")


# ---------------------------------------------------------------------------------------------
# Style mixing


def test_mix_ws_takes_column_styles_exactly_at_the_chosen_layers():
    torch.manual_seed(0)
    row_ws, col_ws = torch.randn(2, 14, 8), torch.randn(3, 14, 8)
    layers = [0, 1, 4]
    mixed = gen.mix_ws(row_ws, col_ws, layers)
    assert mixed.shape == (2, 3, 14, 8)
    for r in range(2):
        for k in range(3):
            for layer in range(14):
                src = col_ws[k] if layer in layers else row_ws[r]
                assert torch.equal(mixed[r, k, layer], src[layer])
    # the paper's groups for a 256^2 generator (14 style layers)
    assert gen.style_layers("coarse", 14) == [0, 1, 2, 3]
    assert gen.style_layers("middle", 14) == [4, 5, 6, 7]
    assert gen.style_layers("fine", 14) == list(range(8, 14))
    assert gen.style_layers("0-6", 14) == list(range(7))
    with pytest.raises(gen.PcganError, match="out of range"):
        gen.style_layers("0-14", 14)


def test_mix_cli_figure_tiles_and_mixed_clouds(run_dir, G, tmp_path):
    out = tmp_path / "mix"
    assert main(["mix", "--ckpt", str(run_dir), "--rows", "1-3", "--cols", "6,7", "--styles", "0-2",
                 "--out", str(out)]) == 0
    fig = np.asarray(Image.open(out / "stylemix.png"))
    R, K, S = 3, 2, META.resolution
    assert fig.shape == ((R + 1) * S, (K + 1) * 2 * S, 3)               # (rows + 1) x (cols + 1) tiles of RGB | shading
    assert sorted(p.name for p in out.glob("*.ply")) == [f"row{r:06d}_col{k:06d}.ply" for r in (1, 2, 3) for k in (6, 7)]
    # tile (row 2, column 7) is that mixed face's RGB | shading
    mixed = gen.mix_grids(G, [1, 2, 3], [6, 7], "0-2")
    pre = preview_image(mixed.mixed[1, 1], META)
    tile = fig[2 * S:3 * S, 2 * 2 * S:3 * 2 * S]
    assert np.array_equal(tile, np.concatenate([pre[:, :S], pre[:, 2 * S:]], axis=1))


def test_mixing_every_layer_gives_the_column_face(run_dir, G, tmp_path):
    every = f"0-{G.num_ws - 1}"
    res = gen.mix_grids(G, [1, 2], [6], every)
    assert torch.equal(res.mixed[0, 0], res.cols[0]) and torch.equal(res.mixed[1, 0], res.cols[0])
    assert main(["mix", "--ckpt", str(run_dir), "--rows", "1", "--cols", "6", "--styles", every,
                 "--out", str(tmp_path / "m")]) == 0
    assert main(["generate", "--ckpt", str(run_dir), "--seeds", "6", "--format", "ply", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "m" / "row000001_col000006.ply").read_bytes() == (tmp_path / "g" / "seed000006.ply").read_bytes()


# ---------------------------------------------------------------------------------------------
# Interpolation


def test_slerp_and_schedule():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.equal(gen.slerp(a, b, 0.0), a)
    torch.testing.assert_close(gen.slerp(a, b, 1.0), b)
    torch.testing.assert_close(gen.slerp(a, b, 0.5), torch.tensor([0.5 ** 0.5, 0.5 ** 0.5]))   # stays on the circle
    assert len(gen.interpolation_schedule(3, 4)) == 9 and len(gen.interpolation_schedule(3, 4, loop=True)) == 12
    with pytest.raises(gen.PcganError, match="at least 2"):
        gen.interpolation_schedule(1, 4)


@pytest.mark.parametrize("space", ["w", "z"])
def test_interpolation_keyframes_are_the_seeds_own_faces(G, space):
    path = gen.interpolate_ws(G, [1, 5, 9], frames=3, space=space, psi=0.7)
    assert path.key_frames == [0, 3, 6] and path.ws.shape == (7, G.num_ws, G.w_dim)
    keys = gen.map_seeds(G, [1, 5, 9], psi=0.7)
    assert torch.equal(path.ws[[0, 3, 6]], keys)
    assert not torch.equal(path.ws[1], path.ws[0]) and not torch.equal(path.ws[1], path.ws[3])
    grids = torch.cat([g for _, g in gen.iter_interpolate(G, path, "random", batch=2)])
    assert torch.equal(grids[[0, 3, 6]], gen.generate_grids(G, [1, 5, 9], psi=0.7, noise_mode="random"))


def test_interpolate_cli_frames_gif_and_keyframe_clouds(run_dir, tmp_path):
    out = tmp_path / "walk"
    flags = ["--ckpt", str(run_dir), "--trunc", "0.7", "--noise-mode", "random"]
    assert main(["interpolate", *flags, "--seeds", "1,5,9", "--frames", "3", "--size", "32", "--out", str(out)]) == 0
    frames = sorted((out / "frames").glob("frame_*.png"))
    assert len(frames) == 7 and Image.open(frames[0]).size == (64, 32)   # RGB | turntable, 32 px each
    gif = Image.open(out / "interpolation.gif")
    assert gif.n_frames == 7 and gif.size == (64, 32)
    assert main(["generate", *flags, "--seeds", "1,5,9", "--format", "ply", "--out", str(tmp_path / "gen")]) == 0
    for s in (1, 5, 9):
        name = f"seed{s:06d}.ply"
        assert (out / name).read_bytes() == (tmp_path / "gen" / name).read_bytes()
    assert not list(out.rglob(".*"))                                      # no temporary files left behind


def test_interpolate_keyframe_may_come_back(run_dir, tmp_path):
    out = tmp_path / "back"
    assert main(["interpolate", "--ckpt", str(run_dir), "--seeds", "2,3,2", "--frames", "2", "--out", str(out)]) == 0
    assert len(list((out / "frames").glob("*.png"))) == 5 and Image.open(out / "interpolation.gif").n_frames == 5
    assert sorted(p.name for p in out.glob("*.ply")) == ["seed000002.ply", "seed000003.ply"]


@pytest.mark.parametrize("command", ["generate", "mix", "interpolate"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"pcgan {command} --ckpt" in text


def test_interpolate_mp4(run_dir, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    out = tmp_path / "v"
    assert main(["interpolate", "--ckpt", str(run_dir), "--seeds", "2,3", "--frames", "4", "--loop",
                 "--video", "mp4", "--out", str(out)]) == 0
    reader = imageio.get_reader(out / "interpolation.mp4")
    try:
        assert reader.count_frames() == 8                                 # 2 keys x 4, looped
    finally:
        reader.close()


def test_frames_without_viewers_fall_back_to_the_preview_shading(G, monkeypatch):
    grid = gen.generate_grids(G, [4])[0]
    monkeypatch.setattr(gen, "_viewers_render", lambda: None)
    pic = gen.frame_picture(grid, META, yaw=20.0)
    pre = preview_image(grid, META)
    S = META.resolution
    assert np.array_equal(pic, np.concatenate([pre[:, :S], pre[:, 2 * S:]], axis=1))
