# Where the parallel jobs of this recipe run (Kaldi's cmd.sh; steps/stages.sh reads it, and
# --cmd / --gpu-cmd override it for one run).
#   local                     the jobs are processes on this machine
#   slurm [sbatch options]    each parallel step is one Slurm job array (sbatch --wait); the recipe
#                             folder and the Python environment must be on a file system every node sees
cpu_cmd="local"   # features, augmentation, CPU embedding
gpu_cmd="local"   # embedding with --device cuda

# A typical Slurm site (partition names, memory and time limits are your cluster's):
# cpu_cmd="slurm --partition=cpu --cpus-per-task=2 --mem=4G --time=4:00:00"
# gpu_cmd="slurm --partition=gpu --gpus=1 --cpus-per-task=8 --mem=32G --time=1-00:00:00"
