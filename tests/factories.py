from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import User

from apps.accounts.roles import Role
from apps.accounts.services import user_grant_role
from apps.catalog.models import GpuVmSize, KaitoModel


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")

    @factory.post_generation
    def role(obj: User, create: bool, extracted: Role | None, **kwargs: Any) -> None:
        if create and extracted is not None:
            user_grant_role(user=obj, role=extracted)


class KaitoModelFactory(factory.django.DjangoModelFactory[KaitoModel]):
    class Meta:
        model = KaitoModel

    model_id = factory.Sequence(lambda n: f"example-org/custom-model-{n}")
    source = KaitoModel.Source.CUSTOM
    weights_gib = 14.0
    token_limit = 32768
    hidden_size = 4096
    num_hidden_layers = 32
    num_attention_heads = 32
    num_kv_heads = 8
    architectures = ["LlamaForCausalLM"]


class GpuVmSizeFactory(factory.django.DjangoModelFactory[GpuVmSize]):
    class Meta:
        model = GpuVmSize

    sku = factory.Sequence(lambda n: f"Standard_Test{n}_v1")
    gpu_model = "NVIDIA A100"
    gpu_count = 1
    gpu_memory_gib = 80
    cuda_cc = 8.0
    price_per_hour = "1.0000"
    price_confidence = "high"
