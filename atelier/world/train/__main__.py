"""`python -m atelier.world.train` (and `torchrun -m atelier.world.train`): the same as `atelier train`."""

from atelier.world.train import main

if __name__ == "__main__":
    main()
