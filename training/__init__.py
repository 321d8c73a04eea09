"""A round's data and training stages: buckets, SFT data, PPM pairs, policy SFT and PPM training."""


from evomath.errors import InputError


class TrainingInputError(InputError):
    """The input cannot yield what was asked (no data, bad directory ...); the message says why."""
