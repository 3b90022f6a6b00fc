"""The time-to-walk criteria of `go2train walkbench` (on eval figures as `go2train eval` returns them)."""

from go2train.walkbench import walks


def result(**policy):
    base = {"forward_speed": 0.5, "displacement_speed": 0.48, "survival": 1.0, "base_height_mean": 0.27,
            "tilt_deg": 3.0}
    return {"policy": {**base, **policy}, "lazy_optimum": False}


def test_a_straight_upright_walk_at_the_command_walks():
    assert walks(result(), 0.5)


def test_each_criterion_can_fail_alone():
    assert not walks(result(forward_speed=0.44), 0.5)
    assert not walks(result(displacement_speed=0.2), 0.5)  # walking in circles (heading speed is fine)
    assert not walks(result(survival=0.9), 0.5)
    assert not walks(result(base_height_mean=0.23), 0.5)
    assert not walks(result(tilt_deg=6.0), 0.5)
    assert not walks({**result(), "lazy_optimum": True}, 0.5)
