"""LightningModule: fused 3D image + age/sex classifier (or, for a score task, regressor), its metrics, and the guards
the seed lacked.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MaxMetric, MetricCollection, MinMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef, R2Score

from adni_lightning.data.batch import Batch
from adni_lightning.data.datamodule import Objective
from adni_lightning.data.preprocess import InputKind
from adni_lightning.errors import OptionError, ProjectError
from adni_lightning.figures import confusion_figure, mid_slices, scatter_figure
from adni_lightning.models import FusionNet, ResNet3d, WideAndDeepNet
from adni_lightning.schedules import CosineToMaxEpochs
from adni_lightning.seeding import derived_seed, run_seed
from adni_lightning.vocabulary import ClassName

#: Checkpoint key of the DataModule's state, whatever the DataModule's class.
DATA_STATE_KEY = "data"
#: The network of each ``model.fusion``.
FUSIONS: dict[str, type[FusionNet | WideAndDeepNet]] = {"concat": FusionNet, "wide_deep": WideAndDeepNet}

#: A regression's loss on the standardised score.
RegressionLoss = Literal["mse", "mae", "huber"]
_REGRESSION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
}


class NonFiniteLossError(ProjectError, FloatingPointError):
    """The loss of a batch is NaN or infinite; the message names the batch's images."""


def _evaluation_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "bacc": MulticlassAccuracy(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
        },
        prefix=prefix,
    )


def _regression_metrics(prefix: str) -> MetricCollection:
    """A score's metrics, in its units: MAE, RMSE, R² and Pearson's r."""
    return MetricCollection(
        {
            "mae": MeanAbsoluteError(),
            "rmse": MeanSquaredError(squared=False),
            "r2": R2Score(),
            "pearson": PearsonCorrCoef(),
        },
        prefix=prefix,
    )


class ADNIClassifier(L.LightningModule):
    """CN / MCI / AD from a 3D volume fused with age and sex.

    Args:
        image_encoder: builds the image network from ``in_channels`` (``class_path`` in configs:
            :class:`~adni_lightning.models.ResNet3d`, :class:`~adni_lightning.models.SeedCNN`, ...).
        in_channels, num_classes, num_tabular_features, class_names, input_kind: linked from the DataModule by
            the CLI (``input_kind`` decides how volumes are drawn: FreeSurfer colours or grey).
        tabular_dim, dropout: numeric branch width and dropout before the classifier (with ``wide_deep``: of the
            deep branch).
        fusion: ``concat`` classifies the image features concatenated with the embedded tabular features
            (:class:`~adni_lightning.models.FusionNet`). ``wide_deep`` adds that network, its last layer started at
            zero, to a linear model of the tabular features (:class:`~adni_lightning.models.WideAndDeepNet`): on a
            small cohort the image branch can swamp a few informative numeric features (age, sex, volumes); starting
            exactly at the linear model, the image must earn any correction it makes.
        deep_weight_decay: with ``wide_deep``, the weight decay of the deep branch (image encoder, tabular branch,
            classifier), while the wide layer keeps the optimizer's settings: a stronger decay holds the deep
            correction near zero where the data do not pull it away. Null: the optimizer's for every parameter.
        optimizer, lr_scheduler: built on the parameters / optimizer (LightningCLI dependency injection).
        class_weighted_loss: weight cross-entropy by inverse class frequency of the training split.
        scheduler_monitor: metric a ``ReduceLROnPlateau`` scheduler watches.
        num_logged_volumes: validation volumes drawn as mid-slices in TensorBoard each epoch.
        channels_last: keep the network's weights and its 3D input in ``channels_last_3d`` memory format.
        compile: compile the network with ``torch.compile`` (the first steps pay its warm-up).
            Both are off until ``benchmarks/throughput.py`` shows a gain on the device at hand.
        objective: ``classification`` or, for a score task, ``regression`` (one output; linked from the DataModule).
            A regression trains on the score standardised with the training split's mean and standard deviation
            (buffers ``target_mean``/``target_std``, kept in the checkpoint) and predicts in the score's units.
        loss: a regression's loss on the standardised score: ``mse``, ``mae`` or ``huber`` (delta 1, in standard
            deviations); a classification trains with cross-entropy and takes only the default.
    """

    #: Cross-entropy weight per class index (ones unless ``class_weighted_loss``), a buffer registered in ``__init__``.
    class_weights: torch.Tensor
    #: A regression's training-split score mean and standard deviation (buffers registered in ``__init__``).
    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(
        self,
        image_encoder: Callable[[int], nn.Module] = ResNet3d,
        in_channels: int = 1,
        num_classes: int = 3,
        num_tabular_features: int = 3,
        class_names: list[ClassName] | None = None,
        input_kind: InputKind = "labelmap",
        tabular_dim: int = 64,
        dropout: float = 0.3,
        fusion: Literal["concat", "wide_deep"] = "concat",
        deep_weight_decay: float | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_weighted_loss: bool = False,
        scheduler_monitor: str = "val/loss",
        num_logged_volumes: int = 4,
        channels_last: bool = False,
        compile: bool = False,
        objective: Objective = "classification",
        loss: RegressionLoss = "mse",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Under LightningCLI the hparams hold the configs of these callables, not the callables themselves.
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.class_names = list(class_names or [ClassName(f"class{i}") for i in range(num_classes)])
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        if deep_weight_decay is not None and fusion != "wide_deep":
            raise OptionError(
                f"model.deep_weight_decay {deep_weight_decay} applies to the deep branch of model.fusion wide_deep, "
                f"and model.fusion is {fusion}: set model.fusion wide_deep, or leave model.deep_weight_decay null"
            )
        if deep_weight_decay is not None and not deep_weight_decay >= 0:
            raise OptionError(
                f"model.deep_weight_decay {deep_weight_decay}: it must be 0 or more "
                "(null: the optimizer's weight decay)"
            )
        self.net = FUSIONS[fusion](image_encoder(in_channels), num_tabular_features, num_classes, tabular_dim, dropout)
        if channels_last:
            self.net.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stub omits it
        if compile:
            self.net.compile()  # in place: the state_dict keys stay those of the plain network
        self.register_buffer("class_weights", torch.ones(num_classes))
        self.regression = objective == "regression"
        if self.regression:
            self._configure_regression(num_classes, class_weighted_loss)
        else:
            if loss != "mse":
                raise OptionError(
                    f"model.loss {loss} is a regression loss, and this task is a classification (cross-entropy): "
                    "drop model.loss, or set data.task.label score"
                )
            self.train_metrics = MetricCollection(
                {"acc": MulticlassAccuracy(num_classes, average="micro")}, prefix="train/"
            )
            self.val_metrics = _evaluation_metrics(num_classes, "val/")
            self.test_metrics = _evaluation_metrics(num_classes, "test/")
            self.val_confusion = MulticlassConfusionMatrix(num_classes)
            self.test_confusion = MulticlassConfusionMatrix(num_classes)
            self.val_bacc_best = MaxMetric()

    def _configure_regression(self, num_classes: int, class_weighted_loss: bool) -> None:
        """A score task's target statistics (set in :meth:`setup`, restored from a checkpoint), metrics in the
        score's units, and the (prediction, target) pairs its scatter figures are drawn from.
        """
        if num_classes != 1:
            raise OptionError(f"model.objective regression predicts one score, not {num_classes} outputs")
        if class_weighted_loss:
            raise OptionError("model.class_weighted_loss weights classes: a regression has none (drop the option)")
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.train_metrics = MetricCollection({"mae": MeanAbsoluteError()}, prefix="train/")
        self.val_metrics = _regression_metrics("val/")
        self.test_metrics = _regression_metrics("test/")
        self.val_mae_best = MinMetric()
        self._scatter: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        if self.hparams["channels_last"]:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        return self.net(image, tabular)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams["class_weighted_loss"]:
            counts = self._datamodule().train_class_counts.float().clamp(min=1)
            self.class_weights.copy_(counts.sum() / (len(counts) * counts))
        if stage == "fit" and self.regression:
            mean, std = self._datamodule().target_statistics
            self.target_mean.fill_(mean)
            self.target_std.fill_(std)

    def on_train_start(self) -> None:
        (self.val_mae_best if self.regression else self.val_bacc_best).reset()  # forget the sanity check's numbers

    def on_train_epoch_start(self) -> None:
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        if optimizer is not None:
            self.log("lr", optimizer.param_groups[0]["lr"], on_step=False, on_epoch=True)

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Reseed the global generators from (seed, step) so dropout depends only on the step: a run resumed
        from a checkpoint then continues exactly as the uninterrupted run would have.
        """
        seed = derived_seed(run_seed(), self.global_step)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)

    def in_units(self, outputs: torch.Tensor) -> torch.Tensor:
        """A regression's ``(B, 1)`` or ``(B,)`` outputs (the standardised score) → ``(B,)`` scores in its units."""
        return outputs.reshape(len(outputs)) * self.target_std + self.target_mean

    def _loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the logits, or a regression's loss (``model.loss``) on the standardised score."""
        if not self.regression:
            return F.cross_entropy(outputs, labels, weight=self.class_weights)
        standardised = (labels - self.target_mean) / self.target_std
        return _REGRESSION_LOSSES[self.hparams["loss"]](outputs.reshape(len(outputs)), standardised)

    def _shared_step(self, batch: Batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"], batch["tabular"]).float()
        loss = self._loss(logits, batch["label"])
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
        if not finite:
            raise NonFiniteLossError(self._non_finite_report(batch, loss, stage))
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=stage != "test",
            batch_size=len(batch["label"]),
            sync_dist=True,
        )
        return loss, logits

    def _non_finite_report(self, batch: Batch, loss: torch.Tensor, stage: str) -> str:
        bad_inputs = [
            image_id
            for image_id, image, tabular in zip(batch["image_id"], batch["image"], batch["tabular"])
            if not (torch.isfinite(image).all() and torch.isfinite(tabular).all())
        ]
        where = (
            f"non-finite inputs in {', '.join(bad_inputs)}"
            if bad_inputs
            else "inputs are finite (diverged: lower the learning rate or clip gradients)"
        )
        return (
            f"{stage} loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
            f"batch images: {', '.join(batch['image_id'])}; {where}"
        )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, logits = self._shared_step(batch, "train")
        self.train_metrics(self.in_units(logits) if self.regression else logits, batch["label"])
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, logits = self._shared_step(batch, "val")
        if self.regression:
            self._update_regression(self.val_metrics, logits, batch["label"])
        else:
            self.val_metrics.update(logits.softmax(dim=1), batch["label"])
            self.val_confusion.update(logits, batch["label"])
        shown = "val/mae" if self.regression else "val/bacc"
        for name, metric in self.val_metrics.items():  # the bar shows loss and val/bacc (mae); the rest: TensorBoard
            self.log(name, metric, on_step=False, on_epoch=True, prog_bar=name == shown)
        if batch_idx == 0:
            self._log_volumes(batch)

    def on_validation_epoch_end(self) -> None:
        if self.regression:
            self.val_mae_best(self.val_metrics["mae"].compute())
            self.log("hp_metric", self.val_mae_best.compute())
            self._log_scatter("val")
            return
        self.val_bacc_best(self.val_metrics["bacc"].compute())
        self.log("hp_metric", self.val_bacc_best.compute())
        self._log_confusion(self.val_confusion, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        _, logits = self._shared_step(batch, "test")
        if self.regression:
            self._update_regression(self.test_metrics, logits, batch["label"])
        else:
            self.test_metrics.update(logits.softmax(dim=1), batch["label"])
            self.test_confusion.update(logits, batch["label"])
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        if self.regression:
            self._log_scatter("test")
        else:
            self._log_confusion(self.test_confusion, "test")

    def _update_regression(self, metrics: MetricCollection, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Score the batch's predictions in the score's units and keep them for the epoch's scatter figure."""
        predicted = self.in_units(outputs)
        metrics.update(predicted, labels)
        self._scatter.append((predicted.detach().cpu(), labels.detach().cpu()))

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        outputs = self(batch["image"], batch["tabular"]).float()
        ids = {key: batch[key] for key in ("image_id", "subject", "group", "split")}
        if self.regression:
            return {**ids, "target": batch["label"].float().cpu(), "prediction": self.in_units(outputs).cpu()}
        return {**ids, "probabilities": outputs.softmax(dim=1).cpu()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the DataModule's part of the contract (age statistics, classes, split) with the weights."""
        datamodule = self._datamodule()
        if hasattr(datamodule, "checkpoint_state"):
            checkpoint[DATA_STATE_KEY] = datamodule.checkpoint_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = self._datamodule()
        if DATA_STATE_KEY in checkpoint and hasattr(datamodule, "restore_checkpoint_state"):
            datamodule.restore_checkpoint_state(checkpoint[DATA_STATE_KEY])

    def _datamodule(self) -> Any:
        """The trainer's DataModule, or ``None`` without a trainer (Lightning sets the attribute at run time, so
        ``Trainer``'s type does not declare it).
        """
        return getattr(self._trainer, "datamodule", None)

    def _tensorboard(self) -> Any | None:
        if (
            isinstance(self.logger, TensorBoardLogger)
            and self.trainer.is_global_zero
            and not self.trainer.sanity_checking
        ):
            return self.logger.experiment
        return None

    def _log_confusion(self, metric: MulticlassConfusionMatrix, stage: str) -> None:
        matrix = metric.compute()
        metric.reset()
        writer = self._tensorboard()
        if writer is not None:
            writer.add_figure(f"{stage}/confusion_matrix", confusion_figure(matrix, self.class_names), self.global_step)

    def _log_scatter(self, stage: str) -> None:
        """Predicted against true score of the epoch (this process's images), for TensorBoard."""
        pairs, self._scatter = self._scatter, []
        writer = self._tensorboard()
        if writer is not None and pairs:
            predicted, true = (torch.cat(side).numpy() for side in zip(*pairs))
            figure = scatter_figure(true, predicted, self.class_names[0])
            writer.add_figure(f"{stage}/predicted_vs_true", figure, self.global_step)

    def _log_volumes(self, batch: Batch) -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        labelmap = self.hparams["input_kind"] == "labelmap"
        for volume, image_id, group in list(zip(batch["volume"], batch["image_id"], batch["group"]))[
            : self.hparams["num_logged_volumes"]
        ]:
            writer.add_image(f"val/volumes/{image_id}_{group}", mid_slices(volume[0], labelmap), self.global_step)

    def _parameter_groups(self) -> Any:
        """Every parameter with the optimizer's settings or, with ``deep_weight_decay``, two groups: the wide layer
        with the optimizer's settings, everything else (the deep branch) with that weight decay.
        """
        decay = self.hparams["deep_weight_decay"]
        if decay is None:
            return self.parameters()
        wide = {id(p) for p in self.net.get_submodule("wide").parameters()}
        return [
            {"params": [p for p in self.parameters() if id(p) in wide]},
            {"params": [p for p in self.parameters() if id(p) not in wide], "weight_decay": decay},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self._parameter_groups())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, CosineToMaxEpochs):
            scheduler.follow(self.trainer.max_epochs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams["scheduler_monitor"]},
        }
