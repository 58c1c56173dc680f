"""``python -m spk`` runs the ``spk`` command line (also ``torchrun ... -m spk train ...``)."""

from spk.cli import main

if __name__ == "__main__":
    main(prog_name="spk")
