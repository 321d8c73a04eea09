"""Scale-out settings of a round: MCTS shards on a Ray cluster through prefect-ray's task runner."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ScaleOut(BaseModel):
    """One shard = one engine; 1 shard searches in the flow's own process (no Ray needed)."""

    shards: int = Field(1, ge=1, description="MCTS shards per round (each starts its own engine)")
    ray_address: str | None = Field(
        None, description="Ray cluster to run shards on ('auto', 'ray://head:10001'); empty: a local Ray instance"
    )
    gpus_per_shard: float = Field(0, ge=0, description="GPUs each shard asks Ray for (one vLLM engine per GPU worker)")
    cpus_per_shard: float = Field(1, gt=0, description="CPUs each shard asks Ray for")
    local_cpus: int | None = Field(None, description="CPUs of a local Ray instance (None: all)")

    def task_runner(self):
        """prefect-ray's task runner for these settings (the ``ray`` extra)."""
        from prefect_ray import RayTaskRunner

        init = {"num_cpus": self.local_cpus} if self.ray_address is None and self.local_cpus else {}
        return RayTaskRunner(address=self.ray_address, init_kwargs=init)

    def remote_options(self):
        from prefect_ray.context import remote_options

        return remote_options(num_cpus=self.cpus_per_shard, num_gpus=self.gpus_per_shard)
