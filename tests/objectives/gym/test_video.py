"""``esvo eval --video``: the mp4 files, decoded again by ffmpeg (imageio-ffmpeg's reader, not
moviepy, which writes them), hold each episode frame by frame (the frame after ``reset`` and one
per step, at the env's render size and fps), and recording does not change the episodes."""

import sys

import numpy as np
import pytest

from esvo.cli import main
from esvo.objectives.gym import GymObjective, export_policy, load_policy, run_episodes
from esvo.objectives.gym.rollout import eval_episodes

SEED = 5
EPISODES = 3


@pytest.fixture
def cartpole_policy(tmp_path):
    """An exported CartPole policy whose episodes (seed 5) last 10, 10 and 8 steps: at 50 fps,
    the 11-frame videos are the length at which moviepy's ImageSequenceClip drops a frame."""
    obj = GymObjective("CartPole-v1", obs_norm=False, max_episode_steps=40)
    theta = np.random.default_rng(0).normal(size=obj.num_params)
    return export_policy(tmp_path / "policy", theta, obj, None, None)


def decode(path):
    """``(frames (n, h, w, 3) uint8, fps)`` of a video file, decoded by ffmpeg."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="pip install -e '.[test]'")
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(f, dtype=np.uint8).reshape(height, width, 3) for f in reader]
    return np.array(frames), meta["fps"]


def replay(policy, env_seed):
    """The renders of one episode, played again here without any recording wrapper."""
    env = policy.env.make(render_mode="rgb_array")
    try:
        obs, _ = env.reset(seed=env_seed)
        frames, done = [env.render()], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy.act(obs))
            frames.append(env.render())
            done = terminated or truncated
        return np.array(frames), env.metadata["render_fps"]
    finally:
        env.close()


def test_eval_video_records_every_episode_frame_by_frame(cartpole_policy, tmp_path, capsys):
    pytest.importorskip("moviepy", reason="pip install -e '.[test]'")
    argv = ["eval", str(cartpole_policy), "--episodes", str(EPISODES), "--seed", str(SEED)]
    assert main(argv) == 0
    plain = capsys.readouterr().out
    target = tmp_path / "videos" / "cp.mp4"
    assert main([*argv, "--video", str(target)]) == 0
    assert capsys.readouterr().out == plain  # same returns and steps: recording changes nothing
    policy = load_policy(cartpole_policy)
    returns, steps = run_episodes(policy, EPISODES, seed=SEED)
    assert f"return {returns.mean():.2f} ± {returns.std():.2f}" in plain
    assert f"{steps} steps" in plain
    assert returns.tolist() == [10.0, 10.0, 8.0]  # CartPole: 1 per step, so steps per episode

    names = sorted(p.name for p in target.parent.iterdir())
    assert names == [f"cp-episode-{i}.mp4" for i in range(EPISODES)]
    for i, episode in enumerate(eval_episodes(SEED, EPISODES, policy.uses_rng)):
        video, fps = decode(target.parent / names[i])
        renders, render_fps = replay(policy, episode.env_seed)
        assert len(renders) == returns[i] + 1
        assert video.shape == renders.shape  # (steps + 1, 400, 600, 3): every frame, full size
        assert fps == render_fps
        # Each frame shows its state: H.264 leaves a mean error of ~0.1 of 255 on these
        # renders; the reset states of two seeds differ by ~0.5, a blank frame by ~2.7.
        error = np.abs(video.astype(np.int16) - renders.astype(np.int16)).mean(axis=(1, 2, 3))
        assert error.max() < 0.3, error


def test_video_without_moviepy_says_how_to_install_it(
    cartpole_policy, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # installed or not, it cannot be imported
    target = tmp_path / "videos" / "cp.mp4"
    with pytest.raises(RuntimeError, match="pip install moviepy"):
        run_episodes(load_policy(cartpole_policy), 1, video=str(target))
    assert main(["eval", str(cartpole_policy), "--episodes", "1", "--video", str(target)]) == 1
    err = capsys.readouterr().err
    assert "recording a video needs moviepy: pip install moviepy" in err
    assert not target.parent.exists()  # nothing written
