"""The Unitree Go2: the robot's constants, in one place and torch-free (config.py imports them).

Joint and leg order, the default standing pose, the PD gains, the URDF shipped in genesis-world and
its link names. Config defaults (``[env] kp``, ``default_*``, ``base_init_height``) start from
these values; the env (go2train/sim/env.py) and the export (go2train/tools/export.py) name joints
and links through them. Values are the Genesis locomotion example's (``examples/locomotion/go2_env.py``).
"""

from __future__ import annotations

# Policy leg and joint order: FR, FL, RR, RL x hip, thigh, calf (Genesis locomotion example).
LEGS = ("FR", "FL", "RR", "RL")
JOINT_PARTS = ("hip", "thigh", "calf")
JOINT_NAMES = [f"{leg}_{part}_joint" for leg in LEGS for part in JOINT_PARTS]
NUM_JOINTS = len(JOINT_NAMES)  # 12

# Default standing pose (rad): what actions are offsets from, and where resets put the joints.
DEFAULT_HIP = 0.0
DEFAULT_FRONT_THIGH = 0.8
DEFAULT_REAR_THIGH = 1.0
DEFAULT_CALF = -1.5

KP = 20.0  # PD position gain, N m/rad, every joint
KD = 0.5  # PD damping gain, N m s/rad
BASE_INIT_HEIGHT = 0.42  # m, the base's height at reset
GENESIS_ARMATURE = 0.1  # Genesis's armature for go2.urdf's joints (the URDF gives none)

URDF = "urdf/go2/urdf/go2.urdf"  # in genesis-world's assets
# The feet are fixed links merged into the calves by Genesis: contacts and foot poses are read on these.
FOOT_LINKS = [f"{leg}_calf" for leg in LEGS]
# Fallback foot geometry (go2.urdf's FR_foot_joint origin, FR_foot collision sphere), in the calf frame.
FOOT_JOINT_XYZ = (0.0, 0.0, -0.213)
FOOT_SPHERE_XYZ = (-0.002, 0.0, 0.0)
FOOT_RADIUS = 0.022

# The trot clock's phase offset of each leg (LEGS order): diagonal pairs FR+RL and FL+RR half a period apart.
TROT_OFFSETS = (0.0, 0.5, 0.5, 0.0)


def joint_pose(hip: float, front_thigh: float, rear_thigh: float, calf: float) -> list[float]:
    """A pose in :data:`JOINT_NAMES` order from the four per-part angles (front and rear thighs differ)."""
    return [a for leg in LEGS for a in (hip, front_thigh if leg[0] == "F" else rear_thigh, calf)]


DEFAULT_POSE = joint_pose(DEFAULT_HIP, DEFAULT_FRONT_THIGH, DEFAULT_REAR_THIGH, DEFAULT_CALF)
