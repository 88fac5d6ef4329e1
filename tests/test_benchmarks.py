"""Smoke tests of the benchmark scripts' own logic (no model is built or timed here)."""

import importlib.util
import os
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'benchmarks')


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_peers_skips_a_model_missing_from_the_registry(monkeypatch, capsys):
  peers = _load('peers')
  import zoo
  monkeypatch.setattr(zoo, 'list_models', lambda pattern='*': ['resnet20'])
  monkeypatch.setattr(peers, 'bench_model', lambda *a, **k: pytest.fail('nothing to time'))
  monkeypatch.setattr(sys, 'argv', ['peers.py', '--models', 'mobilenet_v2'])
  peers.main()
  assert 'mobilenet_v2: skipped, not in the zoo registry yet' in capsys.readouterr().out


def test_peers_rejects_an_unknown_peer(monkeypatch):
  peers = _load('peers')
  monkeypatch.setattr(sys, 'argv', ['peers.py', '--peers', 'zoo,jax_flax'])
  with pytest.raises(SystemExit, match='jax_flax'):
    peers.main()


def test_peers_table_gives_ratios_to_zoo_and_names_failures():
  peers = _load('peers')
  rows = [dict(peer='zoo', rates=[100.0, 90.0, 110.0], first=3.0, peak_mb=50.0),
          dict(peer='keras_jax', rates=[50.0, 50.0, 50.0], first=2.0, peak_mb=70.0),
          dict(peer='torch_compile', error='no answer in 900 s (killed)')]
  table = peers.format_table('resnet20', 10, 32, rows).splitlines()
  assert table[2].split()[:3] == ['zoo', '100.0', '90.0-110.0']
  assert table[2].split()[-1] == '1.00x'
  assert table[3].split()[-1] == '0.50x'
  assert float(table[3].split()[3]) == pytest.approx(2.0 - 10 / 50.0)  # compile: first less a step
  assert 'torch_compile' in table[4] and 'failed: no answer in 900 s' in table[4]


def test_gpu_peak_flops_by_device_kind():
  gpu = _load('gpu_resnet50')
  assert gpu.peak_tflops('NVIDIA H100 80GB HBM3', 0.0) == 989.4
  assert gpu.peak_tflops('NVIDIA H100 PCIe', 0.0) == 756.0
  assert gpu.peak_tflops('cpu', 0.0) is None
  assert gpu.peak_tflops('cpu', 12.5) == 12.5
