"""The admission.k8s.io/v1 protocol: AdmissionReview in, AdmissionReview out (pure, no HTTP here).

review.py reads a request; validating.py and mutating.py decide; answers.py writes what people see.
"""

from __future__ import annotations

from webhook.admission.answers import CLIPPED, WARNING_MAX, error_response
from webhook.admission.mutating import mutate
from webhook.admission.review import Outcome, Review, ReviewError, parse_review
from webhook.admission.validating import validate
from webhook.config import Config, build_evaluator
from webhook.evaluation import Evaluator, Mode
from webhook.gang.settings import GangSettings
from webhook.gang.state import GangIndex, NoCluster
from webhook.karta.registry import DefinitionSet

__all__ = [
    "CLIPPED",
    "WARNING_MAX",
    "Admission",
    "Outcome",
    "Review",
    "ReviewError",
    "error_response",
    "parse_review",
]


class Admission:
    """What a server worker answers reviews with: its evaluator, gang settings and gang index."""

    def __init__(self, evaluator: Evaluator, gang: GangSettings, owners: GangIndex | None = None) -> None:
        self.evaluator = evaluator
        self.gang = gang
        # Tested for None, not truth: a cluster cache has a length and is empty when a worker starts.
        self.owners: GangIndex = owners if owners is not None else NoCluster()

    @classmethod
    def for_config(
        cls, config: Config, definitions: DefinitionSet | None = None, owners: GangIndex | None = None
    ) -> Admission:
        """Admission deciding with the configuration's policy, mode and gang settings."""
        return cls(build_evaluator(config, definitions), config.gang, owners)

    def validate(self, review: Review, mode: Mode | None = None) -> Outcome:
        return validate(self.evaluator, review, mode)

    def mutate(self, review: Review) -> Outcome:
        return mutate(self.evaluator, self.gang, self.owners, review)
