"""``python -m canon.train`` (and ``torchrun --nproc_per_node=K -m canon.train``)."""

from canon.train import main

if __name__ == "__main__":
    main()
