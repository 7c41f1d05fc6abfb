// include/nala/nala.h - nala's C++ API: the one header a program includes.
//
//   #include "include/nala/nala.h"      (compile with -I<nala> -std=c++17 -fopenmp)
//   g++ prog.o <nala>/build/release-nocuda/libnala.a -fopenmp -lpthread -lm
//
// What it gives, floor by floor (each header says more):
//   tensors        nala::Tensor (strided views over shared storage, f32/i64,
//                  CPU or CUDA), nala::Rng, nala::Error (every failure throws it)
//   ops, autograd  differentiable ops on tensors (autograd/ops.h), backward(),
//                  NoGradGuard, gradcheck
//   modules        Module with PyTorch-style names, Linear, Conv2d, LayerNorm,
//                  BatchNorm..., AdamW/SGD, warm-up + cosine schedule, init
//   files          safetensors read/write (atomic), the checked file module
//   models         NaLaFormer and its configs (xt, t, s, b, l, pico), weights,
//                  self-describing model files (load_model, save_model)
//   training       datasets in memory and their batch loader, augmentation,
//                  one training step, checkpoints, run folders, the training
//                  loop, evaluation and top-k prediction; SVG plots of a run
//
// Data-parallel training (MPI, NCCL, the launcher) is not in this header: it is
// the optional library libnala_dist.a, declared in distributed/distributed.h.
// The C interface is include/nala/nala_c.h.
//
// A minimal program:
//
//   auto lm = nala::load_model_file("best.safetensors");   // network + description
//   nala::NoGradGuard ng;
//   nala::Tensor x = nala::Tensor::empty({1, 28, 28, 1});   // NHWC, normalised
//   ...fill x...
//   nala::Tensor logits = lm.model->forward(x);            // (1, classes)
#pragma once

#include "tensor/error.h"
#include "tensor/rng.h"
#include "tensor/tensor.h"

#include "autograd/autograd.h"
#include "autograd/gradcheck.h"
#include "autograd/ops.h"

#include "nn/comm.h"
#include "nn/files.h"
#include "nn/init.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "nn/schedule.h"

#include "models/attention_kind.h"
#include "models/model_file.h"
#include "models/nalaformer.h"
#include "models/plot.h"
#include "models/train_plots.h"
#include "models/weights.h"

#include "models/train/augment.h"
#include "models/train/checkpoint.h"
#include "models/train/data.h"
#include "models/train/evaluate.h"
#include "models/train/log.h"
#include "models/train/run_folder.h"
#include "models/train/step.h"
#include "models/train/trainer.h"
