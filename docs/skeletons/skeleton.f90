! Minimal Fortran model for TAMS file protocol v1 (docs/protocol.md).
! Model: x_{s+1} = x_s - dt*x_s + sigma*sqrt(dt)*xi_s  (Ornstein-Uhlenbeck), observable x.
! File noise mode only.  Build: gfortran -O2 -ffp-contract=off -static -o skeleton-f skeleton.f90
program skeleton
  use, intrinsic :: iso_fortran_env, only: int64, real64, error_unit
  implicit none
  ! &segment: declare EVERY key of protocol v1 -- an unknown name makes the read fail
  integer :: protocol_version, checkpoint_digits, noise_dim
  integer(int64) :: step0, n_steps, checkpoint_every, seed
  real(real64) :: dt, t0
  character(len=4096) :: state_in, checkpoint_prefix, checkpoint_suffix, noise_mode, &
                         noise_file, trace_file
  ! the optional parts of v1 (section 5a): given only when a campaign asks for them
  character(len=4096) :: trace_format = 'text', checkpoint_file = ''
  integer(int64) :: state_offset = 0
  namelist /segment/ protocol_version, state_in, step0, n_steps, dt, t0, checkpoint_every, &
                     checkpoint_prefix, checkpoint_digits, checkpoint_suffix, noise_mode, &
                     noise_file, noise_dim, seed, trace_file, trace_format, checkpoint_file, &
                     state_offset
  ! &parameters: your own names, each with a default
  real(real64) :: sigma = 0.5_real64, x0 = 0.0_real64
  namelist /parameters/ sigma, x0

  character(len=4096) :: request, msg, name
  character(len=32) :: fmt
  integer :: u, t, c, ios
  integer(int64) :: i, step
  real(real64) :: x
  real(real64), allocatable :: noise(:, :)

  call get_command_argument(1, request)
  open(newunit=u, file=trim(request), status='old', action='read', iostat=ios, iomsg=msg)
  if (ios /= 0) call die(msg)
  read(u, nml=segment, iostat=ios, iomsg=msg)
  if (ios /= 0) call die('&segment: '//msg)
  rewind(u)
  read(u, nml=parameters, iostat=ios, iomsg=msg)
  if (ios > 0) call die('&parameters: '//msg)
  close(u)
  if (protocol_version /= 1) call die('protocol_version must be 1')
  if (trim(noise_mode) /= 'file' .or. noise_dim /= 1) call die('only noise_mode = file, noise_dim = 1')
  if (trim(trace_format) /= 'text' .and. trim(trace_format) /= 'binary') call die('trace_format')

  if (len_trim(state_in) == 0) then                 ! step 0: make the initial state
    x = x0
  else                                              ! restart: read the checkpoint given
    open(newunit=u, file=trim(state_in), access='stream', form='unformatted', status='old', &
         action='read', iostat=ios, iomsg=msg)
    if (ios /= 0) call die(msg)
    read(u, pos=state_offset + 1, iostat=ios, iomsg=msg) x
    if (ios /= 0) call die(msg)
    close(u)
  end if

  allocate(noise(noise_dim, n_steps))               ! file is row-major (n_steps, noise_dim)
  open(newunit=u, file=trim(noise_file), access='stream', form='unformatted', status='old', &
       action='read', iostat=ios, iomsg=msg)
  if (ios /= 0) call die(msg)
  read(u, iostat=ios, iomsg=msg) noise
  if (ios /= 0) call die('noise_file: '//msg)
  close(u)

  write(fmt, '(A,I0,A,I0,A)') '(A,I', checkpoint_digits, '.', checkpoint_digits, ',A)'
  if (trim(trace_format) == 'binary') then         ! rows of float64: step, time, obs...
    open(newunit=t, file=trim(trace_file), access='stream', form='unformatted', status='replace')
  else
    open(newunit=t, file=trim(trace_file), status='replace', action='write')
  end if
  if (len_trim(checkpoint_file) > 0) open(newunit=c, file=trim(checkpoint_file), &
      access='stream', form='unformatted', status='replace')
  do i = 1, n_steps
    x = x - dt*x + sigma*sqrt(dt)*noise(1, i)
    step = step0 + i
    if (trim(trace_format) == 'binary') then
      write(t) real(step, real64), real(step, real64)*dt, x
    else
      write(t, '(I0,2(1X,ES24.16E3))') step, real(step, real64)*dt, x   ! step time obs...
    end if
    if ((mod(step, checkpoint_every) == 0 .or. i == n_steps) .and. len_trim(checkpoint_file) > 0) then
      write(c) x                                     ! one record per checkpoint
    else if (mod(step, checkpoint_every) == 0 .or. i == n_steps) then
      write(name, fmt) trim(checkpoint_prefix), step, trim(checkpoint_suffix)
      open(newunit=u, file=trim(name), access='stream', form='unformatted', status='replace')
      write(u) x
      close(u)
    end if
  end do
  close(t)
  if (len_trim(checkpoint_file) > 0) close(c)
contains
  subroutine die(text)
    character(len=*), intent(in) :: text
    write(error_unit, '(A)') 'skeleton: '//trim(text)
    error stop 1
  end subroutine
end program skeleton
